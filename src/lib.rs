#![doc = include_str!("../README.md")]
#![doc(test(attr(deny(warnings))))]

#[cfg(feature = "framing")]
#[doc(inline)]
pub use chorus_framing as framing;
