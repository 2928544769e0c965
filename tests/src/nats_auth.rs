//! NATS decentralized authentication for tests: an operator, its system account and one
//! application account with JetStream, and users of that account as `.creds` files, all as the
//! JWTs `nsc` would issue (ed25519-signed by the NKEY of the level above), so that a private
//! nats-server in operator mode can check them.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use nkeys::KeyPair;
use serde_json::{Value, json};

/// An operator with a system account and one application account (JetStream without limits).
pub struct Operator {
    operator: KeyPair,
    system: KeyPair,
    account: KeyPair,
}

impl Default for Operator {
    fn default() -> Self {
        Self::new()
    }
}

impl Operator {
    pub fn new() -> Self {
        Operator { operator: KeyPair::new_operator(), system: KeyPair::new_account(), account: KeyPair::new_account() }
    }

    /// nats-server configuration for operator mode, the accounts preloaded in a memory resolver.
    pub fn server_config(&self) -> String {
        let operator_jwt = self.sign(
            &self.operator,
            &self.operator.public_key(),
            "test-operator",
            json!({"type": "operator", "version": 2, "system_account": self.system.public_key()}),
        );
        let system_jwt =
            self.sign(&self.operator, &self.system.public_key(), "SYS", json!({"type": "account", "version": 2}));
        let unlimited = json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true,
            "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1,
            "consumer": -1, "max_ack_pending": -1, "mem_max_stream_bytes": -1,
            "disk_max_stream_bytes": -1, "max_bytes_required": false,
        });
        let account_jwt = self.sign(
            &self.operator,
            &self.account.public_key(),
            "ATTENDANCE",
            json!({"type": "account", "version": 2, "limits": unlimited}),
        );
        format!(
            "operator: {operator_jwt}\nsystem_account: {system}\nresolver: MEMORY\nresolver_preload: {{\n  {system}: {system_jwt}\n  {account}: {account_jwt}\n}}\n",
            system = self.system.public_key(),
            account = self.account.public_key(),
        )
    }

    /// Writes `<dir>/<name>.creds` for a new user of the application account, allowed
    /// everything unless `permissions` (`{"pub": {"allow": […]}, "sub": {…}}`) narrows it.
    pub fn user_creds(&self, dir: &Path, name: &str, permissions: Value) -> PathBuf {
        let user = KeyPair::new_user();
        let mut claims = json!({"type": "user", "version": 2, "subs": -1, "data": -1, "payload": -1});
        if let (Value::Object(claims), Value::Object(permissions)) = (&mut claims, permissions) {
            claims.extend(permissions);
        }
        let jwt = self.sign(&self.account, &user.public_key(), name, claims);
        let seed = user.seed().expect("a generated user has a seed");
        let path = dir.join(format!("{name}.creds"));
        let text = format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        );
        std::fs::write(&path, text).expect("write the .creds file");
        path
    }

    /// A JWT of `nats` claims about `subject`, issued and signed by `issuer`.
    fn sign(&self, issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
        let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let header = encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs();
        let claims = json!({
            "jti": format!("{:016X}{:016X}", fastrand::u64(..), fastrand::u64(..)),
            "iat": now,
            "iss": issuer.public_key(),
            "name": name,
            "sub": subject,
            "nats": nats,
        });
        let payload = encode(claims.to_string().as_bytes());
        let signed = format!("{header}.{payload}");
        let signature = issuer.sign(signed.as_bytes()).expect("sign with a private key");
        format!("{signed}.{}", encode(&signature))
    }
}
