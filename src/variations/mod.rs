//! Variations for creative tweaking: wildcards in prompts, AUTOMATIC1111's prompt matrix, X/Y
//! grids over recipe fields, and the labeled contact sheets that show a matrix or grid at once.
//! Pure planning and drawing: the CLI renders what these describe.
pub mod contact_sheet;
pub mod grid;
pub mod matrix;
pub mod wildcards;
