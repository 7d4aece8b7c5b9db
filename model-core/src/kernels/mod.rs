//! Faster versions of stock Burn operations for the layers our network uses, each
//! tested for equality with the stock operation (`tests/kernels.rs`).

/// Defines `fn NAME(args)` that runs the loop `BODY(args)` compiled for the widest
/// vector instructions this CPU has: on x86-64 a copy built for AVX-512F, one for AVX2
/// with FMA, and the baseline, chosen at run time ([`simd_level`], read once); on other
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

/// A set of vector instructions the kernels' own loops are compiled for, narrowest
/// first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// What every CPU of the target has (SSE2 on x86-64, SIMD128 in the page's
    /// WebAssembly).
    Baseline,
    /// AVX2 with FMA: 8 lanes of f32.
    Avx2,
    /// AVX-512F: 16 lanes of f32.
    Avx512,
}

impl SimdLevel {
    /// Every level, narrowest first.
    pub const ALL: [SimdLevel; 3] = [SimdLevel::Baseline, SimdLevel::Avx2, SimdLevel::Avx512];

    /// The name [`SIMD_VARIABLE`] takes for this level.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Baseline => "baseline",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }

    /// The level named `name` (as [`SimdLevel::name`] writes it, any case).
    pub fn parse(name: &str) -> Option<SimdLevel> {
        Self::ALL
            .into_iter()
            .find(|level| level.name().eq_ignore_ascii_case(name.trim()))
    }
}

/// The environment variable that caps the kernels' vector instructions below the
/// CPU's widest (`baseline`, `avx2` or `avx512`). The tests set it to run every copy of
/// the loops on one machine; a user can set it to rule out one copy when looking into
/// a wrong result. Matrix products (the `gemm` crate) choose their own instructions.
pub const SIMD_VARIABLE: &str = "GARMENT_TAGGER_SIMD";

/// The widest level this CPU runs (on targets other than x86-64: the baseline, which
/// there is the only copy).
pub fn cpu_simd_level() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        if avx2 && std::arch::is_x86_feature_detected!("avx512f") {
            return SimdLevel::Avx512;
        }
        if avx2 {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Baseline
}

/// The level the kernels use: the CPU's widest, or the narrower one [`SIMD_VARIABLE`]
/// asks for. Read once per process; a value that names no level is reported on
/// standard error once and ignored.
pub fn simd_level() -> SimdLevel {
    static LEVEL: std::sync::OnceLock<SimdLevel> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cpu = cpu_simd_level();
        match std::env::var(SIMD_VARIABLE) {
            Ok(value) => match SimdLevel::parse(&value) {
                Some(cap) => cpu.min(cap),
                None => {
                    eprintln!(
                        "warning: {SIMD_VARIABLE}={value:?} names no instruction set \
                         (baseline, avx2 or avx512); using {}",
                        cpu.name()
                    );
                    cpu
                }
            },
            Err(_) => cpu,
        }
    })
}

/// Whether the kernels may use AVX2 and FMA: the CPU has them and [`SIMD_VARIABLE`]
/// does not rule them out.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    simd_level() >= SimdLevel::Avx2
}

/// Whether the kernels may use AVX-512F (with AVX2 and FMA, which every such CPU has)
/// for the copies of the inner loops compiled for 16-lane vectors.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    simd_level() >= SimdLevel::Avx512
}

/// For the tests: runs the test binary that calls it again, once per level narrower
/// than this CPU's widest, with [`SIMD_VARIABLE`] set to that level, passing `filters`
/// (test name filters, as `cargo test` takes them) and skipping the calling test
/// `caller`. Panics with the child's output when one fails or runs no test. In such a
/// child (the variable already set) it runs nothing.
#[doc(hidden)]
pub fn rerun_tests_at_narrower_levels(filters: &[&str], caller: &str) {
    if std::env::var_os(SIMD_VARIABLE).is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let widest = cpu_simd_level();
    for level in SimdLevel::ALL.into_iter().filter(|&l| l < widest) {
        let out = std::process::Command::new(&exe)
            .args(filters)
            .args(["--skip", caller])
            .env(SIMD_VARIABLE, level.name())
            .output()
            .expect("the test binary runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "with {SIMD_VARIABLE}={} the tests failed:\n{text}",
            level.name()
        );
        let passed: usize = text
            .lines()
            .filter_map(|l| l.strip_prefix("test result: ok. "))
            .filter_map(|l| l.split_whitespace().next()?.parse::<usize>().ok())
            .sum();
        assert!(
            passed > 0,
            "with {SIMD_VARIABLE}={} no test ran (filters {filters:?}):\n{text}",
            level.name()
        );
        eprintln!("{SIMD_VARIABLE}={}: {passed} tests passed", level.name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_from_their_names_in_any_case() {
        for level in SimdLevel::ALL {
            assert_eq!(SimdLevel::parse(level.name()), Some(level));
            assert_eq!(SimdLevel::parse(&level.name().to_uppercase()), Some(level));
        }
        assert_eq!(SimdLevel::parse(" avx2\n"), Some(SimdLevel::Avx2));
        assert_eq!(SimdLevel::parse("sse4"), None);
        assert!(SimdLevel::Baseline < SimdLevel::Avx2 && SimdLevel::Avx2 < SimdLevel::Avx512);
    }

    /// The level in use is the CPU's, capped by the variable when it is set (as it is
    /// in the children of the test below).
    #[test]
    fn the_variable_caps_the_level_in_use() {
        let expected = match std::env::var(SIMD_VARIABLE)
            .ok()
            .and_then(|v| SimdLevel::parse(&v))
        {
            Some(cap) => cpu_simd_level().min(cap),
            None => cpu_simd_level(),
        };
        assert_eq!(simd_level(), expected);
    }

    /// The library's kernel tests (the layer norm's, the depthwise copies', the ones
    /// above) again with each narrower instruction set than this CPU's widest.
    #[test]
    fn library_kernel_tests_pass_at_every_narrower_level() {
        rerun_tests_at_narrower_levels(
            &["convnext::norm::", "kernels::"],
            "library_kernel_tests_pass_at_every_narrower_level",
        );
    }
}
