"""scripts/bench's driver: diffusers and easel, each in a fresh process per round so that load
time and peak RSS are measured alike, alternating so that a machine's drift hits both."""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

PROMPT = "a lighthouse on a cliff at dusk, oil painting"
NEGATIVE = "blurry"
PHASES = ["load_s", "encode_s", "step_s", "decode_s", "peak_rss_mb"]
DECODE_PHASES = ["load_s", "decode_s", "peak_rss_mb"]


def diffusers_once(args):
    """Runs in a child: one diffusers render, printing its timings as JSON."""
    import resource

    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    t = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=dtype, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    load = time.perf_counter() - t
    with torch.no_grad():
        t = time.perf_counter()
        positive, negative = pipe.encode_prompt(PROMPT, "cpu", 1, True, NEGATIVE)
        encode = time.perf_counter() - t
        stamps = []

        def on_step(_pipe, _i, _t, kwargs):
            stamps.append(time.perf_counter())
            return kwargs

        t = time.perf_counter()
        latents = pipe(prompt_embeds=positive, negative_prompt_embeds=negative, num_inference_steps=args.steps,
                       guidance_scale=7.5, height=args.size, width=args.size, output_type="latent",
                       generator=torch.Generator("cpu").manual_seed(1), callback_on_step_end=on_step).images
        step = (stamps[-1] - t) / args.steps
        t = time.perf_counter()
        pipe.vae.decode(latents / pipe.vae.config.scaling_factor)
        decode = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(load_s=load, encode_s=encode, step_s=step, decode_s=decode, peak_rss_mb=rss)))


def diffusers_decode_once(args):
    """Runs in a child: diffusers' VAE alone, `enable_tiling()`, decoding random latents."""
    import torch
    from diffusers import AutoencoderKL

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    t = time.perf_counter()
    vae = AutoencoderKL.from_pretrained(args.model, subfolder="vae", torch_dtype=dtype)
    vae.enable_tiling()
    load = time.perf_counter() - t
    side = args.decode_size // 8
    latents = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(1)).to(dtype)
    with torch.no_grad():
        t = time.perf_counter()
        image = vae.decode(latents).sample
        decode = time.perf_counter() - t
    assert image.shape == (1, 3, args.decode_size, args.decode_size), image.shape
    print(json.dumps(dict(load_s=load, decode_s=decode)))


def run_child(cmd):
    """Runs a command; returns its stdout and its own peak RSS in MB (wait4, per child)."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {' '.join(cmd)}")
    return text, usage.ru_maxrss / 1024


def diffusers_round(args):
    text, _ = run_child([sys.executable, __file__, "--diffusers-once", "--model", args.model, "--size",
                         str(args.size), "--steps", str(args.steps), "--dtype", args.dtype])
    return json.loads(text.strip().splitlines()[-1])


def easel_round(args, out_dir):
    text, rss = run_child([args.easel, "generate", PROMPT, "--negative", NEGATIVE, "--model", args.model,
                           "--steps", str(args.steps), "--cfg", "7.5", "--seed", "1", "--sampler", "euler",
                           "--width", str(args.size), "--height", str(args.size), "--device", "cpu",
                           "--dtype", args.dtype, "--json", "--out", out_dir])
    report = next(json.loads(line) for line in text.splitlines() if '"timings"' in line)
    t = report["timings"]
    return dict(load_s=t["load_s"], encode_s=t["encode_s"], step_s=t["step_s"], decode_s=t["decode_s"],
                peak_rss_mb=rss)


def decode_round(args, name):
    """One decode-only run of either side; peak RSS from wait4 for both."""
    if name == "diffusers":
        cmd = [sys.executable, __file__, "--diffusers-decode-once", "--model", args.model, "--decode-size",
               str(args.decode_size), "--dtype", args.dtype]
    else:
        cmd = [args.decoder, args.model, str(args.decode_size), args.dtype]
    text, rss = run_child(cmd)
    result = json.loads(text.strip().splitlines()[-1])
    result["peak_rss_mb"] = rss
    return result


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch

    return dict(cpu=cpu, cores=os.cpu_count(), torch_threads=torch.get_num_threads(), python=platform.python_version(),
                torch=torch.__version__)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--easel")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--decode-size", type=int,
                    help="instead of a render: the VAE alone decoding random latents to this size, tiled "
                         "(diffusers' enable_tiling(); easel's examples/decode)")
    ap.add_argument("--decoder", help="easel's examples/decode binary (with --decode-size)")
    ap.add_argument("--diffusers-once", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--diffusers-decode-once", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.diffusers_once:
        return diffusers_once(args)
    if args.diffusers_decode_once:
        return diffusers_decode_once(args)
    phases = DECODE_PHASES if args.decode_size else PHASES
    runs = {"diffusers": [], "easel": []}
    with tempfile.TemporaryDirectory() as out_dir:
        for r in range(args.rounds):
            for name in ("diffusers", "easel"):
                print(f"round {r + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
                if args.decode_size:
                    runs[name].append(decode_round(args, name))
                else:
                    runs[name].append(diffusers_round(args) if name == "diffusers" else easel_round(args, out_dir))
    # The median of the rounds (the best would flatter whichever ran on a quiet moment).
    summary = {name: {p: statistics.median(r[p] for r in rs) for p in phases} for name, rs in runs.items()}
    ratios = {p: summary["easel"][p] / summary["diffusers"][p] for p in phases}
    if args.decode_size:
        print(f"SD 1.5 shapes, VAE decode only to {args.decode_size}x{args.decode_size}, tiled above 512, "
              f"{args.dtype}, {args.rounds} rounds (median)")
    else:
        print(f"SD 1.5 shapes, {args.size}x{args.size}, {args.steps} Euler steps with CFG, {args.dtype}, "
              f"{args.rounds} rounds (median)")
    print(f"{'phase':<14}{'diffusers':>12}{'easel':>12}{'easel/diffusers':>18}")
    for p in phases:
        print(f"{p:<14}{summary['diffusers'][p]:>12.3f}{summary['easel'][p]:>12.3f}{ratios[p]:>18.2f}")
    result = dict(size=args.size, steps=args.steps, dtype=args.dtype, rounds=args.rounds, machine=machine(),
                  runs=runs, median=summary, ratio=ratios, decode_size=args.decode_size)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
