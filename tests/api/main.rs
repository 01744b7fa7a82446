//! Black-box tests of the gateway: the real server on port 0 against a real Postgres, one
//! fresh database per test (created and dropped by `sqlx::test`). All in one test binary.

mod admin_auth;
mod cli;
mod embedded;
mod envelope;
mod health;
#[expect(dead_code, reason = "shared helpers; not every test uses every one")]
mod helpers;
mod leads;
mod live;
