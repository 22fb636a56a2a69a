//! Rebuilds the crate when a migration is added, changed or removed:
//! `embed_migrations!` reads the directory at compile time, but cargo only
//! watches the sources it compiles (diesel_migrations' documented remedy).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
