//! PNG files that carry their recipe twice: AUTOMATIC1111's `parameters` text for other tools,
//! and the full Recipe as JSON under the keyword `easel` for easel itself.
use super::{OutputError, Result};
use crate::engine::pipeline::Image;
use crate::recipe::{Recipe, RecipeError};
use std::io::BufReader;
use std::path::Path;

pub const PARAMETERS_KEY: &str = "parameters";
pub const RECIPE_KEY: &str = "easel";

/// A text chunk and the PNG chunk type that will carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextChunk {
    /// `tEXt`: ISO 8859-1, what most readers handle.
    Latin1 { keyword: String, text: String },
    /// `iTXt`: UTF-8.
    Utf8 { keyword: String, text: String },
}

/// Whether `text` fits tEXt's ISO 8859-1 (every char is one byte there).
pub fn is_latin1(text: &str) -> bool {
    text.chars().all(|c| (c as u32) <= 0xFF)
}

/// tEXt when the text is Latin-1, iTXt otherwise (what A1111, through PIL, does too).
pub fn text_chunk(keyword: &str, text: &str) -> TextChunk {
    let (keyword, text) = (keyword.to_string(), text.to_string());
    if is_latin1(&text) {
        TextChunk::Latin1 { keyword, text }
    } else {
        TextChunk::Utf8 { keyword, text }
    }
}

/// The two chunks that record `recipe`; `model_name` is the `Model:` of the infotext.
pub fn recipe_chunks(recipe: &Recipe, model_name: &str) -> Vec<TextChunk> {
    vec![
        text_chunk(
            PARAMETERS_KEY,
            &super::a1111::parameters(recipe, model_name),
        ),
        TextChunk::Utf8 {
            keyword: RECIPE_KEY.to_string(),
            text: recipe.to_json(),
        },
    ]
}

/// Encodes an 8-bit RGB image with text chunks before the image data.
pub fn encode(image: &Image, chunks: &[TextChunk]) -> Result<Vec<u8>> {
    let expected = image.width as usize * image.height as usize * 3;
    if image.width == 0 || image.height == 0 || image.rgb.len() != expected {
        return Err(OutputError::Encode(format!(
            "{}x{} RGB needs {expected} bytes, got {}",
            image.width,
            image.height,
            image.rgb.len()
        )));
    }
    let enc_err = |e: png::EncodingError| OutputError::Encode(e.to_string());
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, image.width, image.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        for chunk in chunks {
            match chunk {
                TextChunk::Latin1 { keyword, text } => {
                    encoder.add_text_chunk(keyword.clone(), text.clone())
                }
                TextChunk::Utf8 { keyword, text } => {
                    encoder.add_itxt_chunk(keyword.clone(), text.clone())
                }
            }
            .map_err(enc_err)?;
        }
        let mut writer = encoder.write_header().map_err(enc_err)?;
        writer.write_image_data(&image.rgb).map_err(enc_err)?;
        writer.finish().map_err(enc_err)?;
    }
    Ok(bytes)
}

/// Every text chunk of a PNG (tEXt, zTXt and iTXt, in that order), as (keyword, text).
pub fn read_text_chunks(path: &Path) -> Result<Vec<(String, String)>> {
    let file = std::fs::File::open(path).map_err(|source| OutputError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let decode_err = |e: png::DecodingError| OutputError::Decode {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut reader = png::Decoder::new(BufReader::new(file))
        .read_info()
        .map_err(decode_err)?;
    // Chunks after the image data are only seen once the rest of the file is read.
    reader.finish().map_err(decode_err)?;
    let info = reader.info();
    let mut out = Vec::new();
    for c in &info.uncompressed_latin1_text {
        out.push((c.keyword.clone(), c.text.clone()));
    }
    for c in &info.compressed_latin1_text {
        out.push((c.keyword.clone(), c.get_text().map_err(decode_err)?));
    }
    for c in &info.utf8_text {
        out.push((c.keyword.clone(), c.get_text().map_err(decode_err)?));
    }
    Ok(out)
}

/// The recipe an easel PNG carries, if it carries one.
pub fn read_recipe(path: &Path) -> Result<Option<Recipe>> {
    let chunks = read_text_chunks(path)?;
    let Some((_, json)) = chunks.iter().find(|(k, _)| k == RECIPE_KEY) else {
        return Ok(None);
    };
    Recipe::from_json(json)
        .map(Some)
        .map_err(|e: RecipeError| OutputError::Decode {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_kinds(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
        let reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let info = reader.info();
        (
            info.uncompressed_latin1_text
                .iter()
                .map(|c| c.keyword.clone())
                .collect(),
            info.utf8_text.iter().map(|c| c.keyword.clone()).collect(),
        )
    }

    fn pixel() -> Image {
        Image {
            width: 1,
            height: 1,
            rgb: vec![1, 2, 3],
        }
    }

    #[test]
    fn latin1_text_goes_to_text_else_itxt() {
        assert!(is_latin1("café, naïve ÿ"));
        assert!(!is_latin1("狐"));
        assert!(!is_latin1("fox 🦊"));
        assert!(!is_latin1("Œuvre"));
        let chunks = vec![
            text_chunk("a", "café"),
            text_chunk("b", "a fox 狐"),
            text_chunk("c", "emoji 🦊"),
        ];
        assert!(matches!(chunks[0], TextChunk::Latin1 { .. }));
        assert!(matches!(chunks[1], TextChunk::Utf8 { .. }));
        let (latin, utf8) = chunk_kinds(&encode(&pixel(), &chunks).unwrap());
        assert_eq!(latin, vec!["a"]);
        assert_eq!(utf8, vec!["b", "c"]);
    }

    #[test]
    fn refuses_wrong_pixel_count() {
        let bad = Image {
            width: 2,
            height: 2,
            rgb: vec![0; 11],
        };
        let err = encode(&bad, &[]).unwrap_err().to_string();
        assert!(err.contains("needs 12 bytes, got 11"), "{err}");
    }
}
