//! Faster versions of stock Burn operations for the layers our network uses, each
//! tested for equality with the stock operation (`tests/kernels.rs`).

pub mod conv;
#[cfg(feature = "flex-kernels")]
pub mod depthwise;
pub mod gelu;
pub mod layer_norm;
#[cfg(feature = "flex-kernels")]
pub mod pointwise;

/// What both kernels need to reach Flex's own tensors from a generic `B: Backend`.
#[cfg(feature = "flex-kernels")]
mod flex_types {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::backend::BackendTypes;
    use std::any::Any;

    /// The CPU training backend the kernels' backward steps are written for.
    pub(crate) type Ad = Autodiff<Flex>;
    pub(crate) type AdTensor = <Ad as BackendTypes>::FloatTensorPrimitive;

    /// Moves a value between two names of one type (the caller has compared their
    /// `TypeId`s); `None` if they differ.
    pub(crate) fn same<T: 'static, U: 'static>(value: T) -> Option<U> {
        (Box::new(value) as Box<dyn Any>)
            .downcast::<U>()
            .ok()
            .map(|b| *b)
    }
}
