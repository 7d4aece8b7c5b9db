//! Tagging one photo with one category's exported model, on any Burn backend.
//!
//! Everything here comes from model-core: the manifest describes the network and the
//! preprocessing, [`ExportedCategory::load`] builds the network and loads its weights,
//! [`PreprocessConfig`] decodes and normalises the photo and [`decode`] turns logits into
//! labels. The engine only wires them together and reads the results back
//! asynchronously, which WebGPU requires (a synchronous read would block the browser).

use crate::protocol::{AttentionMaps, TagResult};
use crate::WebError;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use model_core::export::{ExportedCategory, WebManifest};
use model_core::predict::decode;
use model_core::preprocess::{decode_rgb, PreprocessConfig};
use model_core::taxonomy::CategorySpec;

/// One category's network, ready to tag photos.
pub struct Tagger<B: Backend> {
    spec: CategorySpec,
    preprocess: PreprocessConfig,
    model: model_core::model::GarmentModel<B>,
    device: B::Device,
}

/// What [`Tagger::tag`] computes for one photo.
#[derive(Debug, Clone)]
pub struct Tagged {
    pub result: TagResult,
    /// The photo as the network saw it (resized and cropped), `size x size` RGBA.
    pub view_rgba: Vec<u8>,
}

impl<B: Backend> Tagger<B> {
    /// Builds `category`'s network from the manifest and loads its weight file's bytes.
    pub fn new(
        manifest: &WebManifest,
        category: &str,
        weights: Vec<u8>,
        device: B::Device,
    ) -> Result<Self, WebError> {
        let exported: &ExportedCategory = manifest.category(category)?;
        let model = exported.load::<B>(weights, &device)?;
        Ok(Self {
            spec: CategorySpec {
                name: exported.name.clone(),
                attributes: exported.attributes.clone(),
            },
            preprocess: manifest.preprocess.clone(),
            model,
            device,
        })
    }

    pub fn category(&self) -> &CategorySpec {
        &self.spec
    }

    /// Decodes, preprocesses and tags one encoded photo (JPEG, PNG or WebP).
    pub async fn tag(&self, name: &str, bytes: &[u8]) -> Result<Tagged, WebError> {
        let photo = decode_rgb(bytes)?;
        // `preprocess_bytes` in two steps, to keep the resized photo for the heat map.
        let view = self.preprocess.resize(&photo);
        let chw = self.preprocess.to_chw(&view);
        let size = self.preprocess.size as usize;
        let pixels =
            Tensor::<B, 1>::from_data(TensorData::new(chw, [3 * size * size]), &self.device)
                .reshape([1, 3, size, size]);
        let output = self.model.forward(pixels);

        // Two reads instead of one per head: every read is a round trip to the GPU.
        let counts = self.spec.class_counts();
        let logits = read_f32(Tensor::cat(output.logits, 1)).await?;
        let mut rows = Vec::with_capacity(counts.len());
        let mut start = 0;
        for count in counts {
            rows.push(logits[start..start + count].to_vec());
            start += count;
        }
        let [_, height, width] = output
            .attention
            .first()
            .map(|a| a.dims())
            .ok_or_else(|| WebError::Browser("the model has no attribute heads".into()))?;
        let attention = read_f32(Tensor::cat(output.attention, 0)).await?;
        let maps = attention
            .chunks(height * width)
            .map(<[f32]>::to_vec)
            .collect();

        let view_rgba = view
            .pixels()
            .flat_map(|p| [p.0[0], p.0[1], p.0[2], u8::MAX])
            .collect();
        Ok(Tagged {
            result: TagResult {
                image: name.to_string(),
                category: self.spec.name.clone(),
                attributes: decode(&self.spec, &rows),
                attention: AttentionMaps {
                    height,
                    width,
                    maps,
                },
                view_size: self.preprocess.size,
                millis: 0.0,
                first_run: false,
                backend: String::new(),
            },
            view_rgba,
        })
    }
}

/// Reads a tensor back as f32 values, without blocking.
async fn read_f32<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Result<Vec<f32>, WebError> {
    let data = tensor
        .into_data_async()
        .await
        .map_err(|e| WebError::Browser(format!("reading the network's output: {e:?}")))?;
    data.convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| WebError::Browser(format!("reading the network's output: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use model_core::convnext::ConvNextConfig;
    use model_core::export::{ExportedCategory, FORMAT};
    use model_core::heads::HeadConfig;
    use model_core::model::GarmentModelConfig;
    use model_core::store::{write_safetensors, Precision};
    use model_core::taxonomy::Taxonomy;
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    type B = Flex;

    /// Runs a future to completion on this thread (the engine's futures are ready at
    /// once on the CPU backend).
    fn block_on<F: Future>(future: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            std::thread::park();
        }
    }

    fn export(size: u32) -> (WebManifest, Vec<u8>, model_core::model::GarmentModel<B>) {
        let spec = Taxonomy::meesho().category("Men Tshirts").unwrap().clone();
        let config = GarmentModelConfig::for_category(
            ConvNextConfig::test_tiny(),
            HeadConfig::new().with_head_dim(32),
            &spec,
        );
        let model = config.init::<B>(&Default::default());
        let weights = write_safetensors(&model, Precision::F32).unwrap();
        let manifest = WebManifest {
            format: FORMAT.into(),
            precision: Precision::F32,
            preprocess: PreprocessConfig::imagenet(size),
            categories: vec![ExportedCategory {
                name: spec.name.clone(),
                attributes: spec.attributes.clone(),
                model: config,
                file: "men-tshirts.safetensors".into(),
                bytes: weights.len() as u64,
            }],
        };
        (manifest, weights, model)
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 3) as u8, ((x + y) * 2) as u8])
        });
        let mut out = Vec::new();
        image::DynamicImage::ImageRgb8(image)
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn tags_like_the_model_core_pipeline() {
        let (manifest, weights, model) = export(64);
        let tagger =
            Tagger::<B>::new(&manifest, "Men Tshirts", weights, Default::default()).unwrap();
        let photo = png(90, 70);
        let tagged = block_on(tagger.tag("shirt.png", &photo)).unwrap();

        // The same photo through model-core directly.
        let chw = manifest.preprocess.preprocess_bytes(&photo).unwrap();
        let pixels = Tensor::<B, 1>::from_floats(chw.as_slice(), &Default::default())
            .reshape([1, 3, 64, 64]);
        let rows: Vec<Vec<f32>> = model
            .forward(pixels)
            .logits
            .into_iter()
            .map(|l| l.into_data().into_vec::<f32>().unwrap())
            .collect();
        let want = decode(tagger.category(), &rows);

        let result = &tagged.result;
        assert_eq!(result.image, "shirt.png");
        assert_eq!(result.category, "Men Tshirts");
        assert_eq!(result.attributes.len(), want.len());
        for (got, want) in result.attributes.iter().zip(&want) {
            assert_eq!(got.name, want.name);
            assert_eq!(got.label, want.label);
            for (class, p) in &want.probs {
                assert!((got.probs[class] - p).abs() < 1e-6, "{} {class}", want.name);
            }
        }
        // One 2x2 map per head (64 / 32), values from a sigmoid.
        assert_eq!((result.attention.height, result.attention.width), (2, 2));
        assert_eq!(result.attention.maps.len(), 5);
        assert!(result
            .attention
            .maps
            .iter()
            .flatten()
            .all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(result.view_size, 64);
        assert_eq!(tagged.view_rgba.len(), 64 * 64 * 4);
    }

    #[test]
    fn bad_photos_and_weights_are_errors_that_say_what() {
        let (manifest, weights, _) = export(64);
        let tagger = Tagger::<B>::new(
            &manifest,
            "Men Tshirts",
            weights.clone(),
            Default::default(),
        )
        .unwrap();
        let err = block_on(tagger.tag("notes.txt", b"hello, not a photo")).unwrap_err();
        assert!(err.to_string().contains("not a readable image"), "{err}");

        let err = Tagger::<B>::new(&manifest, "Sarees", weights.clone(), Default::default())
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("unknown category \"Sarees\""),
            "{err}"
        );

        let err = Tagger::<B>::new(
            &manifest,
            "Men Tshirts",
            b"junk".to_vec(),
            Default::default(),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("Men Tshirts"), "{err}");
    }
}
