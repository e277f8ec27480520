//! Password-based protection of secret keys: scrypt with minisign's parameters.
//!
//! minisign stores `opslimit` and `memlimit` (libsodium's `crypto_pwhash_scryptsalsa208sha256`
//! limits) in the secret key file, not scrypt's `N`, `r` and `p`. [`ScryptParams::from_limits`]
//! turns the limits into scrypt parameters exactly as libsodium's `pickparams()` does, so a key
//! encrypted by minisign decrypts here and the other way round.

use zeroize::Zeroizing;

/// Bytes of the secret key file that the scrypt output is XOR-ed with: key id (8), ed25519
/// secret key (64) and checksum (32).
pub(crate) const STREAM_LEN: usize = 8 + 64 + 32;

/// The most memory a secret key file may ask scrypt for (4 GiB). A file asking for more is
/// refused instead of exhausting the machine.
const MAX_MEMORY: u64 = 4 << 30;

/// The largest scrypt `p` a secret key file may ask for; minisign's own keys use 1.
const MAX_P: u32 = 64;

/// The cost of deriving the key that encrypts a secret key, in libsodium's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfLimits {
    /// libsodium `opslimit`: roughly the number of salsa20/8 core operations.
    pub opslimit: u64,
    /// libsodium `memlimit`: bytes of memory scrypt may use.
    pub memlimit: u64,
}

impl KdfLimits {
    /// What `minisign -G` uses: libsodium's `*_SENSITIVE` limits (scrypt N=2^20, r=8, p=1, 1 GiB
    /// of memory, about a second or two of CPU in an optimised build).
    pub const SENSITIVE: KdfLimits = KdfLimits {
        opslimit: 33_554_432,
        memlimit: 1_073_741_824,
    };

    /// libsodium's `*_INTERACTIVE` limits (N=2^14, 16 MiB). Fast, for tests and throwaway keys.
    pub const INTERACTIVE: KdfLimits = KdfLimits {
        opslimit: 524_288,
        memlimit: 16_777_216,
    };
}

/// scrypt's own parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ScryptParams {
    pub log_n: u8,
    pub r: u32,
    pub p: u32,
}

impl ScryptParams {
    /// libsodium's `pickparams()` from `crypto_pwhash/scryptsalsa208sha256/pwhash_scryptsalsa208sha256.c`.
    pub(crate) fn from_limits(limits: KdfLimits) -> ScryptParams {
        let opslimit = limits.opslimit.max(32_768);
        let memlimit = limits.memlimit;
        let r: u32 = 8;
        let first_log_n_above = |max_n: u64| -> u8 {
            let mut log_n: u8 = 1;
            while log_n < 63 {
                if (1u64 << log_n) > max_n / 2 {
                    break;
                }
                log_n += 1;
            }
            log_n
        };
        if opslimit < memlimit / 32 {
            let max_n = opslimit / (u64::from(r) * 4);
            ScryptParams {
                log_n: first_log_n_above(max_n),
                r,
                p: 1,
            }
        } else {
            let max_n = memlimit / (u64::from(r) * 128);
            let log_n = first_log_n_above(max_n);
            let max_rp = ((opslimit / 4) / (1u64 << log_n)).min(0x3fff_ffff);
            // max_rp <= 0x3fffffff, so it fits in u32.
            let p = u32::try_from(max_rp).unwrap_or(0x3fff_ffff) / r;
            ScryptParams { log_n, r, p }
        }
    }

    /// Bytes of memory scrypt needs for these parameters.
    pub(crate) fn memory(self) -> u64 {
        128u64
            .saturating_mul(u64::from(self.r))
            .saturating_mul(1u64 << self.log_n.min(63))
    }
}

/// Why a key could not be derived from a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KdfError {
    /// The parameters are outside what scrypt accepts (libsodium would refuse them too).
    Invalid(ScryptParams),
    /// The parameters would use more memory or CPU than we allow.
    TooExpensive(ScryptParams),
}

impl std::fmt::Display for KdfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KdfError::Invalid(p) => write!(
                f,
                "scrypt parameters N=2^{} r={} p={} are invalid",
                p.log_n, p.r, p.p
            ),
            KdfError::TooExpensive(p) => write!(
                f,
                "scrypt parameters N=2^{} r={} p={} would need {} MiB of memory and p up to {} is allowed, at most {} MiB",
                p.log_n,
                p.r,
                p.p,
                p.memory() >> 20,
                MAX_P,
                MAX_MEMORY >> 20
            ),
        }
    }
}

/// Derive the XOR stream that encrypts the key id, secret key and checksum of a secret key file:
/// `crypto_pwhash_scryptsalsa208sha256(out, 104, password, salt, opslimit, memlimit)`.
pub(crate) fn derive_stream(
    password: &str,
    salt: &[u8; 32],
    limits: KdfLimits,
) -> Result<Zeroizing<[u8; STREAM_LEN]>, KdfError> {
    let params = ScryptParams::from_limits(limits);
    if params.memory() > MAX_MEMORY || params.p > MAX_P {
        return Err(KdfError::TooExpensive(params));
    }
    // The length given to `Params` only matters for PHC strings; the output buffer decides.
    let scrypt_params = scrypt::Params::new(
        params.log_n,
        params.r,
        params.p,
        scrypt::Params::RECOMMENDED_LEN,
    )
    .map_err(|_| KdfError::Invalid(params))?;
    let mut stream = Zeroizing::new([0u8; STREAM_LEN]);
    scrypt::scrypt(
        password.as_bytes(),
        salt,
        &scrypt_params,
        stream.as_mut_slice(),
    )
    .map_err(|_| KdfError::Invalid(params))?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values worked out by hand from libsodium's `pickparams()`.
    #[test]
    fn limits_map_to_scrypt_params_like_libsodium() {
        let cases = [
            // (opslimit, memlimit) → (log_n, r, p)
            ((33_554_432, 1_073_741_824), (20, 8, 1)), // SENSITIVE: what minisign -G writes
            ((524_288, 16_777_216), (14, 8, 1)),       // INTERACTIVE (memory-bound branch)
            ((32_768, 1 << 30), (10, 8, 1)),           // CPU-bound branch: maxN = 1024
            ((1 << 30, 1 << 20), (10, 8, 32_768)),     // memory-bound, CPU allows many lanes
            ((0, 0), (1, 8, 512)),                     // opslimit raised to 32768, maxN = 0
        ];
        for ((opslimit, memlimit), (log_n, r, p)) in cases {
            let got = ScryptParams::from_limits(KdfLimits { opslimit, memlimit });
            assert_eq!(
                got,
                ScryptParams { log_n, r, p },
                "opslimit={opslimit} memlimit={memlimit}"
            );
        }
    }

    #[test]
    fn refuses_parameters_that_would_exhaust_the_machine() {
        let huge = KdfLimits {
            opslimit: 1 << 40,
            memlimit: 1 << 40,
        };
        let err = derive_stream("pw", &[0; 32], huge).err();
        assert!(matches!(err, Some(KdfError::TooExpensive(_))), "{err:?}");
    }

    #[test]
    fn derivation_is_deterministic_and_password_dependent() -> Result<(), KdfError> {
        let salt = [7u8; 32];
        let a = derive_stream("correct horse", &salt, KdfLimits::INTERACTIVE)?;
        let b = derive_stream("correct horse", &salt, KdfLimits::INTERACTIVE)?;
        let c = derive_stream("battery staple", &salt, KdfLimits::INTERACTIVE)?;
        assert_eq!(*a, *b);
        assert_ne!(*a, *c);
        Ok(())
    }
}
