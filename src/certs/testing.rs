//! Test helpers: a throwaway CA that signs CSRs as the controller manager would.

use rcgen::{CertificateParams, CertificateSigningRequestParams, Issuer, KeyPair};
use time::OffsetDateTime;

/// Signs `csr_pem` with a new CA, valid from `not_before` to `not_after`.
pub(crate) fn sign(csr_pem: &str, not_before: OffsetDateTime, not_after: OffsetDateTime) -> String {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = Issuer::new(ca, ca_key);
    let mut req = CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
    req.params.not_before = not_before;
    req.params.not_after = not_after;
    req.signed_by(&issuer).unwrap().pem()
}

/// Signs `csr_pem` for `lifetime` seconds starting `age` seconds ago.
pub(crate) fn sign_aged(csr_pem: &str, age: i64, lifetime: i64) -> String {
    let start = OffsetDateTime::now_utc() - time::Duration::seconds(age);
    sign(csr_pem, start, start + time::Duration::seconds(lifetime))
}
