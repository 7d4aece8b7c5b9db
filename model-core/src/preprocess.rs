//! Image preprocessing shared by the trainer and the web page: decode, resize to the
//! model's input size, scale to [0, 1], normalise per channel, lay out as CHW.
//!
//! Resizing follows Hugging Face's `ConvNextImageProcessor`:
//! - input size >= 384: the photo is warped to `size x size` (no crop);
//! - smaller sizes: the shortest edge is resized to `size / crop_pct`, then the centre
//!   `size x size` is cropped.
//!
//! The filter is bicubic (Catmull-Rom, a = -0.5, the kernel PIL's `BICUBIC` uses), with
//! its support widened when shrinking so that downscaling is antialiased. An image that
//! is already at the target size is passed through untouched.

use image::{imageops, imageops::FilterType, RgbImage};
use serde::{Deserialize, Serialize};

/// ImageNet channel means (RGB), the statistics every ConvNeXt checkpoint was trained with.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Hugging Face's default `crop_pct` for ConvNeXt below 384 px.
pub const DEFAULT_CROP_PCT: f32 = 224.0 / 256.0;
/// From this input size up, `ConvNextImageProcessor` warps instead of cropping.
pub const WARP_FROM_SIZE: u32 = 384;
/// The largest photo (in pixels, width x height) we agree to decode: 100 megapixels.
pub const MAX_PIXELS: u64 = 100_000_000;

/// A photo that cannot be turned into a model input.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("not a readable image: {0}")]
    Decode(String),
    #[error("empty file: no image data")]
    Empty,
    #[error("image is {width}x{height} pixels, over the limit of {MAX_PIXELS} pixels")]
    TooLarge { width: u32, height: u32 },
}

/// How a photo becomes a `[3, size, size]` model input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessConfig {
    /// Side of the square model input, in pixels.
    pub size: u32,
    /// Fraction of the short edge kept by the centre crop (used below [`WARP_FROM_SIZE`]).
    pub crop_pct: f32,
    /// Per-channel mean subtracted after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after subtracting the mean.
    pub std: [f32; 3],
}

impl PreprocessConfig {
    /// ImageNet normalisation and Hugging Face's default crop at the given size.
    pub fn imagenet(size: u32) -> Self {
        Self {
            size,
            crop_pct: DEFAULT_CROP_PCT,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }

    /// Decodes, resizes and normalises encoded image bytes (JPEG, PNG or WebP).
    /// Returns `[3 * size * size]` values in CHW order.
    pub fn preprocess_bytes(&self, bytes: &[u8]) -> Result<Vec<f32>, PreprocessError> {
        let image = decode_rgb(bytes)?;
        Ok(self.to_chw(&self.resize(&image)))
    }

    /// Resizes a photo to the model's input size, the way the checkpoint's processor does.
    pub fn resize(&self, image: &RgbImage) -> RgbImage {
        let size = self.size;
        if image.width() == size && image.height() == size {
            return image.clone();
        }
        if size >= WARP_FROM_SIZE {
            return imageops::resize(image, size, size, FilterType::CatmullRom);
        }
        let short_target = (size as f32 / self.crop_pct).floor().max(size as f32) as u32;
        let (w, h) = (image.width(), image.height());
        // Keep the aspect ratio, the short edge becoming `short_target`.
        let (nw, nh) = if w <= h {
            (
                short_target,
                ((h as u64 * short_target as u64) / w as u64) as u32,
            )
        } else {
            (
                ((w as u64 * short_target as u64) / h as u64) as u32,
                short_target,
            )
        };
        let resized = imageops::resize(image, nw.max(size), nh.max(size), FilterType::CatmullRom);
        let left = (resized.width() - size) / 2;
        let top = (resized.height() - size) / 2;
        imageops::crop_imm(&resized, left, top, size, size).to_image()
    }

    /// Scales to [0, 1], normalises and lays out a `size x size` image as CHW.
    ///
    /// # Panics
    /// If the image is not `size x size` (call [`Self::resize`] first).
    pub fn to_chw(&self, image: &RgbImage) -> Vec<f32> {
        assert_eq!(
            (image.width(), image.height()),
            (self.size, self.size),
            "to_chw expects an image already resized to the model's input size"
        );
        let plane = (self.size * self.size) as usize;
        let mut out = vec![0.0f32; 3 * plane];
        let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * self.std[c]));
        let shift: [f32; 3] = std::array::from_fn(|c| self.mean[c] / self.std[c]);
        for (i, pixel) in image.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + i] = pixel.0[c] as f32 * scale[c] - shift[c];
            }
        }
        out
    }
}

/// Decodes JPEG, PNG or WebP bytes into 8-bit RGB (alpha dropped, greyscale expanded).
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage, PreprocessError> {
    if bytes.is_empty() {
        return Err(PreprocessError::Empty);
    }
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PreprocessError::Decode(e.to_string()))?;
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| PreprocessError::Decode(e.to_string()))?;
    if width as u64 * height as u64 > MAX_PIXELS {
        return Err(PreprocessError::TooLarge { width, height });
    }
    let image =
        image::load_from_memory(bytes).map_err(|e| PreprocessError::Decode(e.to_string()))?;
    Ok(image.into_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 7 % 256) as u8, (y * 5 % 256) as u8, 90])
        })
    }

    #[test]
    fn image_at_input_size_passes_through_unresized() {
        let cfg = PreprocessConfig::imagenet(64);
        let img = gradient(64, 64);
        assert_eq!(cfg.resize(&img), img);
        let big = PreprocessConfig::imagenet(384);
        let img = gradient(384, 384);
        assert_eq!(big.resize(&img), img);
    }

    #[test]
    fn resize_gives_a_square_of_the_input_size() {
        for size in [32, 224, 384, 512] {
            let cfg = PreprocessConfig::imagenet(size);
            for (w, h) in [(300, 200), (100, 640), (1000, 1000)] {
                let out = cfg.resize(&gradient(w, h));
                assert_eq!(
                    (out.width(), out.height()),
                    (size, size),
                    "{w}x{h} -> {size}"
                );
            }
        }
    }

    #[test]
    fn normalisation_is_chw_and_imagenet() {
        let cfg = PreprocessConfig::imagenet(2);
        let img = RgbImage::from_fn(2, 2, |x, y| {
            if (x, y) == (1, 0) {
                image::Rgb([255, 0, 128])
            } else {
                image::Rgb([0, 0, 0])
            }
        });
        let chw = cfg.to_chw(&img);
        assert_eq!(chw.len(), 12);
        // Pixel (x=1, y=0) is index 1 in each plane.
        let expect_r = (1.0 - 0.485) / 0.229;
        let expect_g = (0.0 - 0.456) / 0.224;
        let expect_b = (128.0 / 255.0 - 0.406) / 0.225;
        assert!((chw[1] - expect_r).abs() < 1e-5);
        assert!((chw[4 + 1] - expect_g).abs() < 1e-5);
        assert!((chw[8 + 1] - expect_b).abs() < 1e-5);
        assert!((chw[0] - (-0.485 / 0.229)).abs() < 1e-5);
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        let cfg = PreprocessConfig::imagenet(32);
        assert!(matches!(
            cfg.preprocess_bytes(b""),
            Err(PreprocessError::Empty)
        ));
        assert!(matches!(
            cfg.preprocess_bytes(b"this is a text file"),
            Err(PreprocessError::Decode(_))
        ));
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(gradient(40, 30))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert!(cfg.preprocess_bytes(&png[..png.len() / 2]).is_err());
        assert_eq!(cfg.preprocess_bytes(&png).unwrap().len(), 3 * 32 * 32);
    }
}
