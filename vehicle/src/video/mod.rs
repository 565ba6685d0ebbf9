//! The video link: the ROUTER socket and its sessions ([`link`], [`session`]), and the codecs
//! behind one [`codec::StreamCodec`] trait: the JPEG ladder ([`jpeg`]) and the H.264 rungs
//! ([`h264`], with its encoders in [`h264_encoder`] and each viewer's stream rate in
//! [`stream_rate`]).

pub mod admission;
pub mod codec;
pub mod h264;
pub mod h264_encoder;
pub mod jpeg;
pub mod link;
pub mod picture;
pub mod session;
pub mod stream_rate;
