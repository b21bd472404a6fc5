//! The Dovecot harness (tests/harness/dovecot.sh): IMAP and POP3 over the Postfix
//! harness's Maildir, for the round-trip probe.

use std::sync::OnceLock;

/// The running Dovecot harness.
pub struct Dovecot {
    /// IMAP, STARTTLS offered.
    pub imap_port: u16,
    pub imaps_port: u16,
    /// POP3, STLS offered.
    pub pop3_port: u16,
    pub pop3s_port: u16,
}

pub const MAILBOX_USER: &str = "probe";
pub const MAILBOX_PASSWORD: &str = "Probe-Pass-9";
/// Mail for this recipient is filed in the junk folder `Junk`.
pub const JUNK_RECIPIENT: &str = "junk@example.test";

/// Start the Postfix harness, then Dovecot over its Maildir, once per process.
pub fn dovecot() -> &'static Dovecot {
    static D: OnceLock<Dovecot> = OnceLock::new();
    D.get_or_init(|| {
        super::harness();
        let base: u16 = std::env::var("DOVECOT_BASE_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(25260);
        super::start_script(
            "dovecot.sh",
            &[],
            "the Dovecot harness did not start (needs root and Debian's dovecot-imapd, dovecot-pop3d: scripts/install-deps.sh)",
        );
        Dovecot {
            imap_port: base,
            imaps_port: base + 1,
            pop3_port: base + 2,
            pop3s_port: base + 3,
        }
    })
}
