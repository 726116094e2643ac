//! What one `easel generate` renders: the layered recipe patch expanded into one job per image
//! (a seed sweep, a prompt matrix, or an X/Y grid), wildcards drawn with each image's seed, and
//! the contact sheet layout when there is one. Pure: no model, no files but wildcard lists.
use crate::engine::pipeline::ModelDefaults;
use crate::recipe::{Recipe, RecipeError, RecipePatch};
use crate::variations::contact_sheet::Label;
use crate::variations::grid::{GridAxis, GridError};
use crate::variations::matrix::PromptMatrix;
use crate::variations::wildcards::Wildcards;
use anyhow::{bail, Result};

/// More images than this in one run is a typo more likely than a plan.
pub const MAX_IMAGES: usize = 1024;

/// How one run varies its images.
#[derive(Debug, Clone, Default)]
pub enum Variation {
    /// `count` images with consecutive seeds (`--batch`).
    #[default]
    Sweep,
    /// AUTOMATIC1111's prompt matrix (`--prompt-matrix`).
    Matrix,
    /// An X/Y grid (`--grid-x`, `--grid-y`; either may be left out).
    Grid {
        x: Option<GridAxis>,
        y: Option<GridAxis>,
    },
}

/// One image to render.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// 0-based position in the run (file suffixes, contact sheet cell).
    pub number: usize,
    /// Model, prompt (wildcards drawn) and seed are set; the rest may wait for model defaults.
    pub patch: RecipePatch,
    /// The prompt before wildcards were drawn, when they changed it.
    pub prompt_template: Option<String>,
}

impl Job {
    pub fn model(&self) -> &str {
        self.patch.model.as_deref().unwrap_or_default()
    }

    /// The full recipe once the model's defaults are known: one image, batch size 1.
    pub fn recipe(
        &self,
        defaults: &ModelDefaults,
        device: &str,
        dtype: &str,
    ) -> std::result::Result<Recipe, RecipeError> {
        // The template is the plan's (wildcards), not the patch's; validation does not read it.
        let mut recipe = crate::render::resolve_patch(&self.patch, defaults, device, dtype)?;
        recipe.prompt_template = self.prompt_template.clone();
        Ok(recipe)
    }
}

/// Which contact sheet a run ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SheetKind {
    Grid,
    Matrix,
}

impl SheetKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Grid => "grid",
            Self::Matrix => "matrix",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SheetPlan {
    pub kind: SheetKind,
    pub columns: usize,
    pub rows: usize,
    pub column_labels: Vec<Vec<Label>>,
    pub row_labels: Vec<Vec<Label>>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    /// In run order; a contact sheet holds them row by row.
    pub jobs: Vec<Job>,
    pub sheet: Option<SheetPlan>,
}

/// What the command line asked for, beside the layered patch.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Images in a sweep (`--batch`); 1 when not given.
    pub count: u32,
    /// The first image's seed.
    pub seed: u64,
    pub variation: Variation,
    /// Matrix and grid cells take seed + cell number instead of one seed for all.
    pub vary_seed: bool,
    /// Whether to draw wildcards in the prompt (not for a prompt read back from an image,
    /// which is already what was rendered).
    pub wildcards: bool,
}

/// Expands the layered `base` patch into jobs. `base` must name the model and the prompt.
pub fn build(base: &RecipePatch, request: &Request, wildcards: &mut Wildcards) -> Result<Plan> {
    let variation_given = !matches!(request.variation, Variation::Sweep);
    if variation_given && request.count > 1 {
        bail!(
            "--batch makes a seed sweep and cannot be combined with --prompt-matrix or --grid-x/-y: \
             vary seeds with --vary-seed or a seed axis (--grid-x seed=1,2,3)"
        );
    }
    if request.vary_seed && !variation_given {
        bail!("--vary-seed applies to --prompt-matrix and --grid-x/-y; --batch N already sweeps seeds");
    }
    let seed_for = |n: usize| -> Result<u64> {
        let step = if variation_given && !request.vary_seed {
            0
        } else {
            n as u64
        };
        request.seed.checked_add(step).ok_or_else(|| {
            anyhow::anyhow!(
                "seed {} plus {step} passes the largest seed (2^64 - 1): choose a smaller --seed",
                request.seed
            )
        })
    };
    let (mut patches, sheet) = match &request.variation {
        Variation::Sweep => (
            (0..request.count.max(1)).map(|_| base.clone()).collect(),
            None,
        ),
        Variation::Matrix => matrix_cells(base)?,
        Variation::Grid { x, y } => grid_cells(base, x.as_ref(), y.as_ref())?,
    };
    if patches.len() > MAX_IMAGES {
        bail!(
            "this run would render {} images, more than {MAX_IMAGES}: use fewer values",
            patches.len()
        );
    }
    let mut jobs = Vec::with_capacity(patches.len());
    for (number, mut patch) in patches.drain(..).enumerate() {
        if !grid_sets_seed(&request.variation) {
            patch.seed = Some(seed_for(number)?);
        }
        patch.batch_size = None;
        let template = patch.prompt.clone().unwrap_or_default();
        let mut prompt_template = None;
        if request.wildcards {
            let seed = patch.seed.unwrap_or_default();
            let expanded = wildcards.expand(&template, seed)?;
            if expanded != template {
                prompt_template = Some(template);
                patch.prompt = Some(expanded);
            }
        }
        jobs.push(Job {
            number,
            patch,
            prompt_template,
        });
    }
    Ok(Plan { jobs, sheet })
}

fn grid_sets_seed(variation: &Variation) -> bool {
    match variation {
        Variation::Grid { x, y } => [x, y]
            .into_iter()
            .flatten()
            .any(|a| a.field == crate::variations::grid::GridField::Seed),
        _ => false,
    }
}

type Cells = (Vec<RecipePatch>, Option<SheetPlan>);

fn matrix_cells(base: &RecipePatch) -> Result<Cells> {
    let matrix = PromptMatrix::parse(base.prompt.as_deref().unwrap_or_default())?;
    let patches = (0..matrix.combinations())
        .map(|n| RecipePatch {
            prompt: Some(matrix.prompt(n)),
            ..base.clone()
        })
        .collect();
    let (columns, rows) = matrix.layout();
    let labels = |is_row: bool, count: usize| -> Vec<Vec<Label>> {
        (0..count)
            .map(|i| {
                matrix
                    .axis_labels(is_row, i)
                    .into_iter()
                    .map(|(text, active)| Label { text, active })
                    .collect()
            })
            .collect()
    };
    let sheet = SheetPlan {
        kind: SheetKind::Matrix,
        columns,
        rows,
        column_labels: labels(false, columns),
        row_labels: labels(true, rows),
    };
    Ok((patches, Some(sheet)))
}

fn grid_cells(base: &RecipePatch, x: Option<&GridAxis>, y: Option<&GridAxis>) -> Result<Cells> {
    if let (Some(x), Some(y)) = (x, y) {
        if x.field == y.field {
            return Err(GridError::SameField(x.field.name()).into());
        }
    }
    let axis_labels = |a: Option<&GridAxis>| -> Vec<Vec<Label>> {
        a.map(|a| {
            a.labels
                .iter()
                .map(|l| vec![Label::new(l.clone())])
                .collect()
        })
        .unwrap_or_default()
    };
    let columns = x.map_or(1, |a| a.values.len());
    let rows = y.map_or(1, |a| a.values.len());
    let mut patches = Vec::with_capacity(columns * rows);
    for r in 0..rows {
        for c in 0..columns {
            let mut patch = base.clone();
            // Y first, so an X prompt S/R sees the Y value's prompt, as a grid reads row by row.
            if let Some(y) = y {
                y.values[r].apply(&mut patch)?;
            }
            if let Some(x) = x {
                x.values[c].apply(&mut patch)?;
            }
            patches.push(patch);
        }
    }
    let sheet = SheetPlan {
        kind: SheetKind::Grid,
        columns,
        rows,
        column_labels: axis_labels(x),
        row_labels: axis_labels(y),
    };
    Ok((patches, Some(sheet)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::schedulers::SamplerKind;
    use std::path::Path;

    fn base(prompt: &str) -> RecipePatch {
        RecipePatch {
            model: Some("m".into()),
            prompt: Some(prompt.into()),
            ..Default::default()
        }
    }

    fn plan(prompt: &str, request: Request) -> Result<Plan> {
        build(
            &base(prompt),
            &request,
            &mut Wildcards::new(Path::new("/nonexistent")),
        )
    }

    fn seeds(p: &Plan) -> Vec<u64> {
        p.jobs.iter().map(|j| j.patch.seed.unwrap()).collect()
    }

    #[test]
    fn sweep_uses_consecutive_seeds_and_batch_one() {
        let p = plan(
            "a fox",
            Request {
                count: 8,
                seed: 100,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(seeds(&p), (100..108).collect::<Vec<_>>());
        assert!(p.sheet.is_none());
        let defaults = ModelDefaults {
            width: 64,
            height: 32,
            steps: 3,
            cfg: 1.5,
        };
        let r = p.jobs[3].recipe(&defaults, "cpu", "fp32").unwrap();
        assert_eq!((r.seed, r.batch_size, r.index), (103, 1, 0));
        assert_eq!(
            (r.width, r.height, r.steps, r.cfg),
            (64, 32, 3, 1.5),
            "unset fields take the model's defaults"
        );
        let err = plan(
            "a",
            Request {
                count: 2,
                seed: u64::MAX,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("largest seed"), "{err}");
    }

    #[test]
    fn wildcards_drawn_per_seed_and_template_kept() {
        let request = Request {
            count: 16,
            seed: 0,
            wildcards: true,
            ..Default::default()
        };
        let p = plan("a {red|blue} fox", request.clone()).unwrap();
        let prompts: Vec<&str> = p
            .jobs
            .iter()
            .map(|j| j.patch.prompt.as_deref().unwrap())
            .collect();
        assert!(prompts.contains(&"a red fox") && prompts.contains(&"a blue fox"));
        assert!(p
            .jobs
            .iter()
            .all(|j| j.prompt_template.as_deref() == Some("a {red|blue} fox")));
        let again = plan("a {red|blue} fox", request).unwrap();
        assert_eq!(p.jobs, again.jobs);
        let off = plan(
            "a {red|blue} fox",
            Request {
                count: 1,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            off.jobs[0].patch.prompt.as_deref(),
            Some("a {red|blue} fox")
        );
        assert_eq!(off.jobs[0].prompt_template, None);
    }

    #[test]
    fn matrix_jobs_share_a_seed_unless_varied() {
        let request = Request {
            count: 1,
            seed: 5,
            variation: Variation::Matrix,
            ..Default::default()
        };
        let p = plan("a cat|hat|snow|night", request.clone()).unwrap();
        assert_eq!(p.jobs.len(), 8);
        assert_eq!(seeds(&p), vec![5; 8]);
        assert_eq!(p.jobs[5].patch.prompt.as_deref(), Some("a cat, hat, night"));
        let sheet = p.sheet.unwrap();
        assert_eq!((sheet.columns, sheet.rows), (4, 2));
        assert_eq!(sheet.column_labels[1][0], Label::new("hat"));
        assert!(!sheet.column_labels[1][1].active);
        let varied = plan(
            "a cat|hat",
            Request {
                vary_seed: true,
                ..request.clone()
            },
        )
        .unwrap();
        assert_eq!(seeds(&varied), vec![5, 6]);
        let err = plan(
            "a cat|hat",
            Request {
                count: 2,
                ..request
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("--batch"), "{err}");
    }

    #[test]
    fn grid_cells_row_by_row() {
        let x: GridAxis = "cfg=4,7,10".parse().unwrap();
        let y: GridAxis = "sampler=euler_a,ddim".parse().unwrap();
        let p = plan(
            "a fox",
            Request {
                count: 1,
                seed: 3,
                variation: Variation::Grid {
                    x: Some(x),
                    y: Some(y),
                },
                ..Default::default()
            },
        )
        .unwrap();
        let cells: Vec<(f64, SamplerKind)> = p
            .jobs
            .iter()
            .map(|j| (j.patch.cfg.unwrap(), j.patch.sampler.unwrap()))
            .collect();
        assert_eq!(
            cells,
            [
                (4.0, SamplerKind::EulerAncestral),
                (7.0, SamplerKind::EulerAncestral),
                (10.0, SamplerKind::EulerAncestral),
                (4.0, SamplerKind::Ddim),
                (7.0, SamplerKind::Ddim),
                (10.0, SamplerKind::Ddim),
            ]
        );
        assert_eq!(seeds(&p), vec![3; 6]);
        let sheet = p.sheet.unwrap();
        assert_eq!((sheet.columns, sheet.rows), (3, 2));
        assert_eq!(sheet.row_labels[1], vec![Label::new("sampler: ddim")]);

        let seeds_axis: GridAxis = "seed=9,11".parse().unwrap();
        let p = plan(
            "a fox",
            Request {
                count: 1,
                seed: 3,
                vary_seed: true,
                variation: Variation::Grid {
                    x: Some(seeds_axis.clone()),
                    y: None,
                },
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(seeds(&p), vec![9, 11]);
        let err = plan(
            "a",
            Request {
                count: 1,
                variation: Variation::Grid {
                    x: Some(seeds_axis.clone()),
                    y: Some(seeds_axis),
                },
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("both vary seed"), "{err}");
    }
}
