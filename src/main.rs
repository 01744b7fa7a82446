//! The `gateway` command: `serve`, `migrate`, `admin create`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use gateway::config::{self, Config};
use gateway::startup::{self, Database};

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "Domizan Gateway: the event-sourced backend between the landing page, the admin \
             panel, the desktop app and the Intelligence service.",
    long_about = "Domizan Gateway: the event-sourced backend between the landing page, the \
                  admin panel, the desktop app and the Intelligence service.\n\n\
                  `gateway serve` with no DATABASE_URL runs its own Postgres under DATA_DIR \
                  and prints how to log in.",
    after_help = environment(
        "Environment (every command reads the whole configuration; see each command's --help):",
        &[]
    )
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API until Ctrl-C or SIGTERM (own Postgres under DATA_DIR when
    /// DATABASE_URL is unset).
    #[command(
        long_about = "Serves the HTTP API on BIND until Ctrl-C or SIGTERM, then lets requests in \
                      flight finish.\n\n\
                      The database is DATABASE_URL if set. Otherwise the gateway runs a private \
                      Postgres cluster under DATA_DIR/postgres with the machine's Postgres \
                      binaries (created on first start, stopped on exit). Pending migrations \
                      are applied first.\n\n\
                      In development, secrets that are not set are generated once into \
                      DATA_DIR/dev-secrets.json; the start banner says where and prints a \
                      ready-to-paste login.",
        after_help = environment("Environment:", &[])
    )]
    Serve,
    /// Apply pending database migrations and exit.
    #[command(
        long_about = "Applies pending migrations to DATABASE_URL, or to the embedded cluster \
                      under DATA_DIR (started for this and stopped after), and exits.",
        after_help = environment(DATABASE_ONLY, DATABASE_VARIABLES)
    )]
    Migrate,
    /// Manage admin users directly in the database.
    #[command(
        long_about = "Manages admin users directly in the database (DATABASE_URL, or the \
                      embedded cluster under DATA_DIR), without the HTTP API: for the first \
                      admin of a production system, or a locked-out one.",
        after_help = environment(DATABASE_ONLY, DATABASE_VARIABLES)
    )]
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an admin (migrates first). The password comes from ADMIN_PASSWORD or is read
    /// from stdin.
    #[command(after_help = environment(
        DATABASE_ONLY,
        &[
            ("ADMIN_PASSWORD", "the new admin's password (unset: one line read from stdin)"),
            ("DATABASE_URL", ""),
            ("DATA_DIR", ""),
            ("PG_BIN_DIR", ""),
            ("GATEWAY_ENV", ""),
            ("RUST_LOG", ""),
            ("LOG_FORMAT", ""),
        ]
    ))]
    Create {
        /// E-mail address, the admin's login
        #[arg(long)]
        email: String,
        /// Display name
        #[arg(long)]
        name: String,
        /// super_admin, admin or viewer
        #[arg(long)]
        role: String,
        /// Comma-separated: leads,licenses,users,analytics,settings,audit (a super admin
        /// gets all of them anyway).
        #[arg(long, value_delimiter = ',')]
        permissions: Vec<String>,
    },
}

/// Heading of the commands that only need the database. They still read the whole
/// configuration as `serve` does (so production refuses to run them with weak secrets too).
const DATABASE_ONLY: &str = "Environment (the configuration is checked as for `gateway serve`, \
                             see its --help; these are the ones that matter here):";

/// The variables a database-only command uses; an empty meaning takes the one of
/// [`config::VARIABLES`].
const DATABASE_VARIABLES: &[(&str, &str)] = &[
    ("DATABASE_URL", ""),
    ("DATA_DIR", ""),
    ("PG_BIN_DIR", ""),
    ("GATEWAY_ENV", ""),
    ("RUST_LOG", ""),
    ("LOG_FORMAT", ""),
];

/// A help section listing environment variables, aligned: `variables`, or every one the
/// gateway reads if empty.
fn environment(heading: &str, variables: &[(&str, &str)]) -> String {
    let all: Vec<(&str, &str)> = config::VARIABLES
        .iter()
        .map(|v| (v.name, v.meaning))
        .collect();
    let rows: Vec<(&str, &str)> = if variables.is_empty() {
        all.clone()
    } else {
        variables
            .iter()
            .map(|&(name, meaning)| {
                let meaning = if meaning.is_empty() {
                    all.iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, m)| *m)
                        .unwrap_or_default()
                } else {
                    meaning
                };
                (name, meaning)
            })
            .collect()
    };
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    let mut text = heading.to_string();
    for (name, meaning) in rows {
        text.push_str(&format!("\n  {name:width$}  {meaning}"));
    }
    text
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    gateway::telemetry::init(
        config.is_production() || std::env::var("LOG_FORMAT").as_deref() == Ok("json"),
    );
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let database = Database::open(&config).await?;
            let result = database.migrate().await;
            database.close().await?;
            result?;
            println!("migrations applied");
            Ok(())
        }
        Command::Admin {
            command:
                AdminCommand::Create {
                    email,
                    name,
                    role,
                    permissions,
                },
        } => {
            let password = admin_password(&email)?;
            let database = Database::open(&config).await?;
            let result = async {
                database.migrate().await?;
                let store = eventstore::EventStore::new(database.pool.clone());
                let admin = gateway::auth::users::CliAdmin {
                    email,
                    name,
                    role,
                    permissions,
                    password,
                };
                gateway::auth::users::create_from_cli(&store, admin).await
            }
            .await;
            database.close().await?;
            let id = result?;
            println!("admin created: {id}");
            Ok(())
        }
    }
}

/// `ADMIN_PASSWORD`, or one line from stdin (echoed: pipe it in where that matters).
fn admin_password(email: &str) -> anyhow::Result<secrecy::SecretString> {
    if let Ok(password) = std::env::var("ADMIN_PASSWORD") {
        return Ok(password.into());
    }
    eprint!("password for {email}: ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string().into())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    let address = listener.local_addr()?;
    if let (Some(file), Some(admin)) = (&config.dev_secrets_file, &config.bootstrap_admin) {
        // Where to find the credentials, never the credentials themselves.
        println!("Domizan Gateway (development) on http://{address}");
        println!(
            "  admin login:   {} (password, X-Admin-Secret and landing API key in {})",
            admin.email,
            file.display()
        );
        println!("  health:        curl http://{address}/health");
        // A ready-to-paste login that reads the secrets from the file at the shell.
        let f = file.display();
        println!(
            "  log in:        curl -s http://{address}/v1/admin/auth/login -H 'Content-Type: application/json' \\\n                   -H \"X-Admin-Secret: $(sed -n 's/.*\"adminSecret\": \"\\(.*\\)\".*/\\1/p' {f})\" \\\n                   -d \"{{\\\"email\\\": \\\"{}\\\", \\\"password\\\": \\\"$(sed -n 's/.*\"bootstrapAdminPassword\": \"\\(.*\\)\".*/\\1/p' {f})\\\"}}\"",
            admin.email
        );
    }
    startup::run(config, listener, startup::shutdown_signal()).await
}
