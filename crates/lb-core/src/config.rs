//! What the control state needs to know about the program it plans for.

/// Default Maglev table size (a prime).
pub const DEFAULT_RING_SIZE: u32 = 65537;

/// The sizes the control state plans within, fixed when the program is
/// loaded: `LbConfig::default()` then one setter per field. An embedder of
/// the kernel program gets it from its load-time configuration
/// (`flowpin_bpf_progs::xdp_lb::XdpLbConfig::lb_config`), so both agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LbConfig {
    /// Maglev table size M of every VIP's ring (a prime). Default 65537.
    pub ring_size: u32,
    /// VIP ids are `0..max_vips`. Default 16.
    pub max_vips: u32,
    /// Global backend indices are `1..max_backends` (0 is never a
    /// backend). Default 4096.
    pub max_backends: u32,
    /// Each VIP address gets an ICMP entry that answers echo requests.
    /// Default true.
    pub answer_icmp_echo: bool,
}

impl Default for LbConfig {
    fn default() -> Self {
        LbConfig {
            ring_size: DEFAULT_RING_SIZE,
            max_vips: 16,
            max_backends: 4096,
            answer_icmp_echo: true,
        }
    }
}

impl LbConfig {
    /// Sets [`LbConfig::ring_size`].
    pub fn ring_size(mut self, ring_size: u32) -> Self {
        self.ring_size = ring_size;
        self
    }

    /// Sets [`LbConfig::max_vips`].
    pub fn max_vips(mut self, max_vips: u32) -> Self {
        self.max_vips = max_vips;
        self
    }

    /// Sets [`LbConfig::max_backends`].
    pub fn max_backends(mut self, max_backends: u32) -> Self {
        self.max_backends = max_backends;
        self
    }

    /// Sets [`LbConfig::answer_icmp_echo`].
    pub fn answer_icmp_echo(mut self, answer_icmp_echo: bool) -> Self {
        self.answer_icmp_echo = answer_icmp_echo;
        self
    }
}
