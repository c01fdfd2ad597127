//! The component types compiled into this binary.

use weir_pipeline::component::Registry;

pub fn registry() -> Registry {
    let mut r = Registry::default();
    weir_records::register(&mut r);
    weir_sources::register(&mut r);
    #[cfg(feature = "sources-ebpf")]
    weir_sources_ebpf::register(&mut r);
    weir_transforms::register(&mut r);
    weir_sinks::register(&mut r);
    crate::fault::register(&mut r);
    r
}
