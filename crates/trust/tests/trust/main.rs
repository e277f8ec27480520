//! Integration tests of jarfleet-trust against the real `minisign` and `gpg` binaries.
//!
//! They need both tools (`apt-get install -y minisign gnupg`) and fail, never skip, without them.

mod helper;

mod gpg_interop;
mod minisign_interop;
mod store;
