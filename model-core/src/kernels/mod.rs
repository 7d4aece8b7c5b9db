//! Faster versions of stock Burn operations for the layers our network uses, each
//! tested for equality with the stock operation (`tests/kernels.rs`).

pub mod adamw;
pub mod conv;
#[cfg(feature = "flex-kernels")]
pub mod depthwise;
pub mod gelu;
pub mod layer_norm;
pub mod patches;
#[cfg(feature = "flex-kernels")]
pub mod pointwise;

/// What both kernels need to reach Flex's own tensors from a generic `B: Backend`.
#[cfg(feature = "flex-kernels")]
pub(crate) mod flex_types {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::backend::{Backend, BackendTypes};
    use std::any::{Any, TypeId};

    /// The CPU training backend the kernels' backward steps are written for.
    pub(crate) type Ad = Autodiff<Flex>;
    pub(crate) type AdTensor = <Ad as BackendTypes>::FloatTensorPrimitive;

    /// Whether `B` is Flex or `Autodiff<Flex>`, the backends the kernels run on.
    pub(crate) fn is_flex<B: Backend>() -> bool {
        let id = TypeId::of::<B>();
        id == TypeId::of::<Flex>() || id == TypeId::of::<Ad>()
    }

    /// A contiguous f32 Flex tensor of shape `dims` holding `values`.
    pub(crate) fn flex_tensor(values: Vec<f32>, dims: Vec<usize>) -> burn_flex::FlexTensor {
        burn_flex::FlexTensor::from_data(burn::tensor::TensorData::new(values, dims))
    }

    /// Moves a value between two names of one type (the caller has compared their
    /// `TypeId`s); `None` if they differ.
    pub(crate) fn same<T: 'static, U: 'static>(value: T) -> Option<U> {
        (Box::new(value) as Box<dyn Any>)
            .downcast::<U>()
            .ok()
            .map(|b| *b)
    }
}

/// Whether this x86-64 CPU has AVX2 and FMA, for the kernels that keep a copy of their
/// inner loops compiled for them (the check is cached by the standard library).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}
