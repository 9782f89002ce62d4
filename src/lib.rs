#![doc = include_str!("../README.md")]
#![doc(test(attr(deny(warnings))))]
// docs.rs (`--cfg docsrs`, nightly) labels feature-gated items with their feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "framing")]
#[doc(inline)]
pub use chorus_framing as framing;

#[cfg(feature = "runtime")]
#[doc(inline)]
pub use chorus_framing::runtime;

#[cfg(feature = "crypto")]
#[doc(inline)]
pub use chorus_crypto as crypto;

#[cfg(feature = "hostcache")]
#[doc(inline)]
pub use chorus_hostcache as hostcache;

#[cfg(feature = "nat")]
#[doc(inline)]
pub use chorus_nat as nat;

#[cfg(feature = "index")]
#[doc(inline)]
pub use chorus_index as index;

#[cfg(feature = "media")]
#[doc(inline)]
pub use chorus_media as media;

#[cfg(feature = "mixer")]
#[doc(inline)]
pub use chorus_mixer as mixer;
