// The schema is embedded with `sqlx::migrate!`: rebuild when a migration is added or changed,
// not only when a Rust file is (a new migration alone would otherwise not reach the binaries).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
