//! A plan to the images it makes. Each job's recipe is layered as `easel generate` layers
//! flags over presets, then expanded by the same planner (`cli::plan`: wildcards drawn per seed,
//! prompt matrix, X/Y grid) once per seed. Every image gets an identity (a hash of what decides
//! its pixels, so it survives edits to other jobs), and a file name from the template;
//! two images wanting one name are refused here, before anything renders.
use super::hash::stable_hex;
use super::plan_file::{Place, PlanFile, Section};
use super::seeds::SeedSpec;
use super::state::BatchState;
use super::template::{Field, Template, Values};
use crate::cli::plan::{self, SheetKind, SheetPlan, Variation};
use crate::presets::Preset;
use crate::recipe::{RecipeLora, RecipePatch};
use crate::variations::wildcards::Wildcards;
use anyhow::{anyhow, bail, Result};
use std::collections::HashMap;
use std::path::Path;

/// More images than this in one plan is a typo more likely than a plan: split it.
pub const MAX_PLAN_IMAGES: usize = 100_000;

/// One image of the plan, ready for the worker.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedImage {
    /// The recipe hash, plus `-N` for the Nth image with the same recipe.
    pub id: String,
    pub recipe_hash: String,
    /// The job's name, else its number.
    pub job: String,
    pub job_line: usize,
    /// Within the job, from 0.
    pub index: usize,
    /// Within a matrix or grid, from 0.
    pub cell: usize,
    pub seed: u64,
    /// Model, prompt (wildcards drawn) and seed set; the rest may wait for the model's defaults.
    pub patch: RecipePatch,
    pub prompt_template: Option<String>,
    pub loras: Vec<RecipeLora>,
    pub presets: Vec<String>,
    /// Relative to the output folder, `/`-separated.
    pub path: String,
}

impl PlannedImage {
    pub fn model(&self) -> &str {
        self.patch.model.as_deref().unwrap_or_default()
    }
}

/// A job whose random seeds are not drawn yet (shown by --dry-run and status before a run).
#[derive(Debug, Clone, PartialEq)]
pub struct Unseeded {
    pub job: String,
    pub job_line: usize,
    pub images: usize,
    /// What the images will need, to check before anything is written.
    pub model: String,
    pub loras: Vec<RecipeLora>,
}

#[derive(Debug, Default)]
pub struct Expansion {
    pub images: Vec<PlannedImage>,
    pub unseeded: Vec<Unseeded>,
    /// The contact sheets of prompt-matrix and grid jobs, one per job and seed.
    pub sheets: Vec<PlannedSheet>,
}

/// A contact sheet of a matrix or grid job: drawn once all its cells are done.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedSheet {
    pub job: String,
    pub seed: u64,
    pub layout: SheetPlan,
    /// The cells' paths and recipe hashes, row by row.
    pub cells: Vec<(String, String)>,
    /// Beside the first cell: `{job}-{seed}-grid.png` or `-matrix.png`.
    pub path: String,
}

/// Where the plan's presets come from (the user's store, or a fixed set in tests).
pub type PresetLookup<'a> = dyn FnMut(&str) -> Result<Preset> + 'a;

/// The key a job's random seeds are recorded under: its name, else what it says (without
/// `count`) and which of the jobs saying exactly that it is.
pub fn job_keys(plan: &PlanFile) -> Vec<String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    plan.jobs
        .iter()
        .map(|job| {
            if let Some(name) = &job.name {
                return format!("name:{name}");
            }
            let n = seen.entry(job.identity.as_str()).or_insert(0);
            *n += 1;
            let hash = stable_hex(job.identity.as_bytes());
            if *n == 1 {
                format!("job:{hash}")
            } else {
                format!("job:{hash}#{n}")
            }
        })
        .collect()
}

/// How many random seeds each job that may draw them needs, by job key (a job that names no
/// seed gets one, unused when its preset sets a seed).
pub fn random_seed_wants(plan: &PlanFile) -> Vec<(String, usize)> {
    plan.jobs
        .iter()
        .zip(job_keys(plan))
        .filter_map(|(job, key)| match seeds_of(job, &plan.defaults) {
            Seeds::Random(n) => Some((key, n as usize)),
            Seeds::FromRecipe => Some((key, 1)),
            Seeds::List(_) => None,
        })
        .collect()
}

enum Seeds {
    List(Vec<u64>),
    Random(u32),
    /// Whatever the layered recipe says (a preset's seed), else one random seed.
    FromRecipe,
}

/// A job's own seeds win over `[defaults]`' ones; `seed = N` counts as a list of one.
fn seeds_of(job: &Section, defaults: &Section) -> Seeds {
    let own = |s: &Section| match (&s.seeds, s.patch.seed) {
        (Some(SeedSpec::List(v)), _) => Some(Seeds::List(v.clone())),
        (Some(SeedSpec::Random(n)), _) => Some(Seeds::Random(*n)),
        (None, Some(seed)) => Some(Seeds::List(vec![seed])),
        (None, None) => None,
    };
    own(job)
        .or_else(|| own(defaults))
        .unwrap_or(Seeds::FromRecipe)
}

/// The label a job shows in messages, manifests and `{job}`.
pub fn job_label(job: &Section) -> String {
    match (&job.name, job.place) {
        (Some(name), _) => name.clone(),
        (None, Place::Job(n)) => n.to_string(),
        (None, Place::Defaults) => "defaults".into(),
    }
}

pub struct Expander<'a> {
    pub presets: &'a mut PresetLookup<'a>,
    pub wildcards: &'a mut Wildcards,
    pub state: Option<&'a BatchState>,
    /// `{date}`: the state's, else today's.
    pub date: String,
    pub template: &'a Template,
    pub plan_file: &'a str,
}

impl Expander<'_> {
    pub fn expand(&mut self, plan: &PlanFile) -> Result<Expansion> {
        let mut out = Expansion::default();
        let mut hashes: HashMap<String, usize> = HashMap::new();
        let mut paths: HashMap<String, (String, usize, usize)> = HashMap::new();
        for (job, key) in plan.jobs.iter().zip(job_keys(plan)) {
            let label = job_label(job);
            let at = format!("{}:{}: job {label}", self.plan_file, job.line);
            let (patch, presets) = self.layered(job, &plan.defaults, &at)?;
            let loras = job
                .loras
                .clone()
                .or_else(|| plan.defaults.loras.clone())
                .unwrap_or_default();
            let variation = job
                .variation
                .clone()
                .or_else(|| plan.defaults.variation.clone())
                .unwrap_or_default();
            let vary_seed = job.vary_seed.or(plan.defaults.vary_seed).unwrap_or(false);
            let seeds = match seeds_of(job, &plan.defaults) {
                Seeds::List(v) => v,
                Seeds::FromRecipe if patch.seed.is_some() => patch.seed.into_iter().collect(),
                Seeds::Random(n) => match self.recorded(&key, n as usize) {
                    Some(v) => v,
                    None => {
                        let cells = self
                            .cells(&patch, &variation, vary_seed, 0, &at)?
                            .jobs
                            .len();
                        out.unseeded.push(Unseeded {
                            job: label.clone(),
                            job_line: job.line,
                            images: cells * n as usize,
                            model: patch.model.clone().unwrap_or_default(),
                            loras: loras.clone(),
                        });
                        continue;
                    }
                },
                Seeds::FromRecipe => match self.recorded(&key, 1) {
                    Some(v) => v,
                    None => {
                        let cells = self
                            .cells(&patch, &variation, vary_seed, 0, &at)?
                            .jobs
                            .len();
                        out.unseeded.push(Unseeded {
                            job: label.clone(),
                            job_line: job.line,
                            images: cells,
                            model: patch.model.clone().unwrap_or_default(),
                            loras: loras.clone(),
                        });
                        continue;
                    }
                },
            };
            let preset_label = if presets.is_empty() {
                "none".to_string()
            } else {
                presets.join("+")
            };
            let model_name = if self.template.uses(Field::Model) {
                crate::cli::generate::model_name(Path::new(
                    patch.model.as_deref().unwrap_or_default(),
                ))
            } else {
                String::new()
            };
            let mut index = 0;
            for seed in seeds {
                let built = self.cells(&patch, &variation, vary_seed, seed, &at)?;
                let mut sheet_cells = Vec::new();
                for cell in built.jobs {
                    let recipe_hash = recipe_hash(&cell.patch, &cell.prompt_template, &loras);
                    let n = hashes.entry(recipe_hash.clone()).or_insert(0);
                    *n += 1;
                    let id = if *n == 1 {
                        recipe_hash.clone()
                    } else {
                        format!("{recipe_hash}-{n}")
                    };
                    let seed = cell.patch.seed.unwrap_or_default();
                    let path = self.template.render(&Values {
                        job: &label,
                        index,
                        cell: cell.number,
                        seed,
                        preset: &preset_label,
                        model: &model_name,
                        date: &self.date,
                        prompt: cell.patch.prompt.as_deref().unwrap_or_default(),
                        hash: &recipe_hash,
                    });
                    if let Some((other, other_line, other_index)) =
                        paths.insert(path.to_lowercase(), (label.clone(), job.line, index))
                    {
                        bail!(
                            "{at}: image {index} and image {other_index} of job {other} (line {other_line}) \
                             would both be written to {path}: make out = {:?} tell them apart \
                             (with {{job}}, {{index}}, {{seed}} or {{hash}})",
                            self.template.source()
                        );
                    }
                    sheet_cells.push((path.clone(), recipe_hash.clone()));
                    out.images.push(PlannedImage {
                        id,
                        recipe_hash,
                        job: label.clone(),
                        job_line: job.line,
                        index,
                        cell: cell.number,
                        seed,
                        patch: cell.patch,
                        prompt_template: cell.prompt_template,
                        loras: loras.clone(),
                        presets: presets.clone(),
                        path,
                    });
                    index += 1;
                    if out.images.len() > MAX_PLAN_IMAGES {
                        bail!(
                            "the plan makes more than {MAX_PLAN_IMAGES} images: split it into several plans"
                        );
                    }
                }
                if let Some(layout) = built.sheet {
                    let path = sheet_path(&sheet_cells[0].0, &label, seed, layout.kind);
                    if let Some((other, other_line, _)) =
                        paths.insert(path.to_lowercase(), (label.clone(), job.line, index))
                    {
                        bail!(
                            "{at}: the contact sheet {path} has the name of an image of job {other} \
                             (line {other_line}): change out = {:?} so images do not end in -grid \
                             or -matrix",
                            self.template.source()
                        );
                    }
                    out.sheets.push(PlannedSheet {
                        job: label.clone(),
                        seed,
                        layout,
                        cells: sheet_cells,
                        path,
                    });
                }
            }
        }
        Ok(out)
    }

    fn recorded(&self, key: &str, n: usize) -> Option<Vec<u64>> {
        let seeds = self.state?.seeds.get(key)?;
        (seeds.len() >= n).then(|| seeds[..n].to_vec())
    }

    /// The job's recipe: `[defaults]` under the job; a job's presets replace the defaults'.
    fn layered(
        &mut self,
        job: &Section,
        defaults: &Section,
        at: &str,
    ) -> Result<(RecipePatch, Vec<String>)> {
        let names = job
            .presets
            .clone()
            .or_else(|| defaults.presets.clone())
            .unwrap_or_default();
        let mut loaded = Vec::new();
        for name in &names {
            loaded.push((self.presets)(name).map_err(|e| anyhow!("{at}: {e}"))?);
        }
        let stack: Vec<&Preset> = loaded.iter().collect();
        // As `easel generate`: presets style the prompt; fields given here win over presets.
        let patch = if job.presets.is_some() {
            crate::presets::resolve(&defaults.patch, &stack, &job.patch)
        } else {
            let mut flags = defaults.patch.clone();
            flags.layer(&job.patch);
            crate::presets::resolve(&RecipePatch::default(), &stack, &flags)
        };
        if patch.prompt.is_none() {
            bail!("{at} has no prompt: set prompt in the job or in [defaults] (\"\" for none)");
        }
        if patch.model.as_deref().is_none_or(|m| m.trim().is_empty()) {
            bail!("{at} has no model: set model in the job, in [defaults], or in its preset");
        }
        check_init(&patch).map_err(|e| anyhow!("{at}: {e}"))?;
        Ok((patch, names))
    }

    fn cells(
        &mut self,
        patch: &RecipePatch,
        variation: &Variation,
        vary_seed: bool,
        seed: u64,
        at: &str,
    ) -> Result<plan::Plan> {
        let request = plan::Request {
            count: 1,
            seed,
            variation: variation.clone(),
            vary_seed,
            wildcards: true,
        };
        let built = plan::build(patch, &request, self.wildcards)
            .map_err(|e| anyhow!("{at}: {}", plan_words(&e.to_string())))?;
        Ok(built)
    }
}

/// Beside the first cell, named for the job and seed (the cells' own names come from the
/// plan's template, which may not tell seeds apart in a shared folder).
fn sheet_path(first_cell: &str, job: &str, seed: u64, kind: SheetKind) -> String {
    let name = format!("{}-{seed}-{}.png", super::template::safe(job), kind.name());
    match first_cell.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{name}"),
        None => name,
    }
}

/// The planner speaks in `easel generate`'s flags; a plan spells them as keys.
fn plan_words(message: &str) -> String {
    message
        .replace("--prompt-matrix", "prompt_matrix")
        .replace("--grid-x/-y", "grid_x/grid_y")
        .replace("--vary-seed", "vary_seed")
        .replace("--grid-x", "grid_x")
        .replace("--batch N", "seeds")
        .replace("--batch", "seeds")
        .replace("--seed", "seed")
}

fn check_init(p: &RecipePatch) -> std::result::Result<(), String> {
    if p.init_image.is_none() {
        for (given, key) in [
            (p.mask.is_some(), "mask"),
            (p.strength.is_some(), "strength"),
            (p.mask_blur.is_some(), "mask_blur"),
            (p.keep_unmasked.is_some(), "keep_unmasked"),
        ] {
            if given {
                return Err(format!(
                    "{key} needs init_image: it applies to an image to start from"
                ));
            }
        }
    } else if p.mask.is_none() {
        for (given, key) in [
            (p.mask_blur.is_some(), "mask_blur"),
            (p.keep_unmasked.is_some(), "keep_unmasked"),
        ] {
            if given {
                return Err(format!("{key} needs mask: it shapes the inpainting mask"));
            }
        }
    }
    Ok(())
}

/// What decides an image's pixels and metadata, hashed: the layered recipe fields (seed and
/// drawn prompt included), the wildcard template and the LoRAs.
pub fn recipe_hash(patch: &RecipePatch, template: &Option<String>, loras: &[RecipeLora]) -> String {
    let canonical = serde_json::json!({
        "patch": patch,
        "prompt_template": template,
        "loras": loras,
    });
    stable_hex(canonical.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::super::plan_file::parse;
    use super::*;

    fn expand_with(text: &str, state: Option<&BatchState>) -> Result<Expansion> {
        let plan = parse(text, "p.toml").map_err(anyhow::Error::new)?;
        let template = Template::parse(
            plan.out
                .as_ref()
                .map_or(super::super::template::DEFAULT_TEMPLATE, |(t, _)| t),
        )
        .map_err(anyhow::Error::msg)?;
        let mut lookup = |name: &str| -> Result<Preset> {
            let text = crate::presets::builtin::builtin(name)
                .ok_or_else(|| anyhow!("no preset {name}"))?;
            Ok(Preset::parse(text, name)?)
        };
        let mut wildcards = Wildcards::new(Path::new("/nonexistent"));
        Expander {
            presets: &mut lookup,
            wildcards: &mut wildcards,
            state,
            date: "2026-11-28".into(),
            template: &template,
            plan_file: "p.toml",
        }
        .expand(&plan)
    }

    fn expand(text: &str) -> Expansion {
        expand_with(text, None).unwrap()
    }

    #[test]
    fn seeds_layers_and_names() {
        let e = expand(
            r#"
out = "{preset}/{date}/{seed}-{index}.png"
[defaults]
model = "m"
steps = 20
[[jobs]]
prompt = "a lighthouse at dusk"
seeds = [1, 2, 3]
[[jobs]]
preset = "watercolor"
prompt = "a fox in the snow"
seeds = "10..14"
"#,
        );
        let paths: Vec<&str> = e.images.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "none/2026-11-28/1-0.png",
                "none/2026-11-28/2-1.png",
                "none/2026-11-28/3-2.png",
                "watercolor/2026-11-28/10-0.png",
                "watercolor/2026-11-28/11-1.png",
                "watercolor/2026-11-28/12-2.png",
                "watercolor/2026-11-28/13-3.png",
            ]
        );
        let first = &e.images[0];
        assert_eq!(first.patch.steps, Some(20));
        assert_eq!(first.patch.seed, Some(1));
        assert_eq!(first.patch.prompt.as_deref(), Some("a lighthouse at dusk"));
        // The job's preset wins over [defaults] and styles the prompt, as --preset does.
        let watercolor = Preset::parse(
            crate::presets::builtin::builtin("watercolor").unwrap(),
            "watercolor",
        )
        .unwrap();
        let fox = &e.images[3];
        assert_eq!(fox.patch.steps, watercolor.patch.steps.or(Some(20)));
        assert_eq!(
            fox.patch.prompt,
            Some(crate::presets::merge_prompt(
                watercolor.patch.prompt.as_deref().unwrap(),
                "a fox in the snow"
            ))
        );
        assert_eq!(fox.presets, vec!["watercolor".to_string()]);
        let ids: std::collections::HashSet<&str> = e.images.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids.len(), 7);
        assert!(e.unseeded.is_empty());
    }

    #[test]
    fn identities_follow_the_recipe_not_the_position() {
        let one = expand("[defaults]\nmodel = \"m\"\n[[jobs]]\nprompt = \"b\"\nseeds = [5, 6]\n");
        let two = expand(
            "[defaults]\nmodel = \"m\"\n[[jobs]]\nprompt = \"a\"\nseed = 1\n[[jobs]]\nprompt = \"b\"\nseeds = [5, 6]\n",
        );
        assert_eq!(one.images[0].id, two.images[1].id);
        assert_eq!(one.images[1].id, two.images[2].id);
        let changed = expand(
            "[defaults]\nmodel = \"m\"\nsteps = 3\n[[jobs]]\nprompt = \"b\"\nseeds = [5, 6]\n",
        );
        assert_ne!(one.images[0].recipe_hash, changed.images[0].recipe_hash);
        // The same recipe twice is two images with two identities.
        let dup = expand(
            "out = \"{job}-{index}.png\"\n[defaults]\nmodel = \"m\"\n[[jobs]]\nprompt = \"b\"\nseeds = [5, 5]\n",
        );
        assert_eq!(dup.images[0].recipe_hash, dup.images[1].recipe_hash);
        assert_eq!(dup.images[1].id, format!("{}-2", dup.images[0].id));
    }

    #[test]
    fn collisions_are_refused_before_rendering() {
        let err = expand_with(
            "out = \"{seed}.png\"\n[defaults]\nmodel = \"m\"\n[[jobs]]\nprompt = \"a\"\nseeds = [1]\n[[jobs]]\nprompt = \"b\"\nseeds = [1]\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("p.toml:7: job 2"), "{err}");
        assert!(err.contains("both be written to 1.png"), "{err}");
        assert!(err.contains("job 1 (line 4)"), "{err}");
    }

    #[test]
    fn random_seeds_wait_for_the_state_then_come_from_it() {
        let text = "[defaults]\nmodel = \"m\"\n[[jobs]]\nname = \"r\"\nprompt = \"a\"\ncount = 3\n[[jobs]]\nprompt = \"b\"\n";
        let e = expand_with(text, None).unwrap();
        assert!(e.images.is_empty());
        assert_eq!(
            e.unseeded
                .iter()
                .map(|u| (u.job.as_str(), u.images))
                .collect::<Vec<_>>(),
            [("r", 3), ("2", 1)]
        );
        let plan = parse(text, "p.toml").unwrap();
        let wants = random_seed_wants(&plan);
        assert_eq!(wants[0], ("name:r".to_string(), 3));
        assert!(wants[1].0.starts_with("job:"), "{wants:?}");
        let mut state = BatchState::fresh();
        state.seeds.insert("name:r".into(), vec![7, 8, 9, 10]);
        state.seeds.insert(wants[1].0.clone(), vec![99]);
        let e = expand_with(text, Some(&state)).unwrap();
        let seeds: Vec<u64> = e.images.iter().map(|i| i.seed).collect();
        assert_eq!(seeds, [7, 8, 9, 99]);
    }

    #[test]
    fn matrix_grid_and_wildcards_expand_per_seed() {
        let e = expand(
            "[defaults]\nmodel = \"m\"\n[[jobs]]\nprompt = \"a cat|hat\"\nprompt_matrix = true\nseeds = [1, 2]\n",
        );
        assert_eq!(e.images.len(), 4);
        assert_eq!(
            e.images
                .iter()
                .map(|i| (i.seed, i.cell, i.index))
                .collect::<Vec<_>>(),
            [(1, 0, 0), (1, 1, 1), (2, 0, 2), (2, 1, 3)]
        );
        let e = expand(
            "[defaults]\nmodel = \"m\"\n[[jobs]]\nprompt = \"a\"\ngrid_x = \"cfg=3,5\"\ngrid_y = \"steps=1,2\"\nseed = 4\n",
        );
        assert_eq!(e.images.len(), 4);
        assert_eq!(e.images[3].patch.cfg, Some(5.0));
        assert_eq!(e.images[3].patch.steps, Some(2));
        let e = expand("[defaults]\nmodel = \"m\"\n[[jobs]]\nprompt = \"a {red|blue} fox\"\nseeds = \"0..8\"\n");
        assert!(e
            .images
            .iter()
            .all(|i| i.prompt_template.as_deref() == Some("a {red|blue} fox")));
        assert!(e
            .images
            .iter()
            .any(|i| i.patch.prompt.as_deref() == Some("a red fox")));
        assert!(e
            .images
            .iter()
            .any(|i| i.patch.prompt.as_deref() == Some("a blue fox")));
    }

    #[test]
    fn missing_prompt_model_or_preset_say_which_job() {
        for (text, word) in [
            ("[[jobs]]\nmodel = \"m\"\n", "p.toml:1: job 1 has no prompt"),
            ("[[jobs]]\nprompt = \"a\"\n", "has no model"),
            (
                "[[jobs]]\nmodel = \"m\"\nprompt = \"a\"\npreset = \"nope\"\n",
                "no preset nope",
            ),
            (
                "[[jobs]]\nmodel = \"m\"\nprompt = \"a\"\nmask = \"m.png\"\n",
                "mask needs init_image",
            ),
            (
                "[[jobs]]\nmodel = \"m\"\nprompt = \"a\"\nvary_seed = true\n",
                "vary_seed applies to prompt_matrix",
            ),
        ] {
            let err = expand_with(text, None).unwrap_err().to_string();
            assert!(err.contains(word), "{text}: {err}");
        }
    }
}
