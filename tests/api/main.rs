//! Black-box tests of the gateway: the real server on port 0 against a real Postgres, one
//! fresh database per test (created and dropped by `testkit::test`). All in one test binary.

mod admin_auth;
mod certificates;
mod cli;
mod devices;
mod embedded;
mod envelope;
mod fakes;
mod hardening;
mod health;
mod helpers;
mod integrations;
mod leads;
mod licenses;
mod live;
