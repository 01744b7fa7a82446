//! The `gateway` command: `serve`, `migrate`, `admin create`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use gateway::config::Config;
use gateway::startup::{self, Database};

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "Domizan Gateway: event-sourced backend for Domizan"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (embedded Postgres under DATA_DIR when DATABASE_URL is unset).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage admin users directly in the database.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an admin. The password comes from ADMIN_PASSWORD or is read from stdin.
    Create {
        #[arg(long)]
        email: String,
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
