//! Faster versions of stock Burn operations for the layers our network uses, each
//! tested for equality with the stock operation (`tests/kernels.rs`).

/// Defines `fn NAME(args)` that runs the loop `BODY(args)` compiled for the widest
/// vector instructions this CPU has: on x86-64 a copy built for AVX-512F, one for AVX2
/// with FMA, and the baseline, chosen at run time (the checks are cached); on other
/// targets `BODY` as it is. `BODY` must be `#[inline(always)]`, so that each copy is
/// compiled with its own instructions rather than calling one shared baseline build.
/// Written `= BODY, baseline PLAIN;`, the baseline copy (and other targets) run
/// `PLAIN` instead: for loops whose wide copies use fused multiply-adds, which the
/// baseline instruction set lacks.
macro_rules! widest_simd {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) = $body:path;) => {
        widest_simd! {
            $(#[$attr])* $vis fn $name($($arg: $ty),*) = $body, baseline $body;
        }
    };
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) =
        $body:path, baseline $baseline:path;) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if $crate::kernels::has_avx512() {
                    // SAFETY: the CPU was just checked for AVX-512F, AVX2 and FMA.
                    return unsafe { avx512($($arg),*) };
                }
                if $crate::kernels::has_avx2_fma() {
                    // SAFETY: the CPU was just checked for AVX2 and FMA.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $baseline($($arg),*)
        }
    };
}

pub mod adamw;
pub mod conv;
#[cfg(feature = "flex-kernels")]
pub mod depthwise;
pub mod gate;
pub mod gelu;
#[cfg(feature = "flex-kernels")]
pub mod grouped;
pub mod layer_norm;
pub mod patches;
#[cfg(feature = "flex-kernels")]
pub mod pointwise;
pub mod residual;

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

/// Whether this x86-64 CPU has AVX-512F (with AVX2 and FMA, which every such CPU has),
/// for the copies of the inner loops compiled for 16-lane vectors.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f") && has_avx2_fma()
}
