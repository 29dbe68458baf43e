//! Which images a Docker stack runs on, and how they get onto the engine: official
//! images pulled (bounded), our server image built from `docker/Dockerfile.server`, or
//! the `:offline` images built by `docker/offline/build.sh` where no registry answers.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures::StreamExt;

use super::DockerStack;
use crate::provision;
use crate::runtime::{ImageChoice, UpEvent};

/// Which family of images a stack runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFlavor {
    /// `apache/kafka`, `mongo:7` (single-node replica set), our server built from
    /// `docker/Dockerfile.server` on `debian:bookworm-slim`.
    Official,
    /// The `:offline` images of `docker/offline/build.sh` (FerretDB plays mongo, on
    /// `wiber-postgres`).
    Offline,
}
/// The images of one stack. Official names follow the compose file and its variables
/// (`WIBER_KAFKA_IMAGE`, `WIBER_MONGO_IMAGE`, `WIBER_SERVER_IMAGE`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Images {
    pub flavor: ImageFlavor,
    pub kafka: String,
    /// The PostgreSQL under FerretDB; `None` where mongo is MongoDB itself.
    pub postgres: Option<String>,
    pub mongo: String,
    pub server: String,
}
impl Images {
    /// The `:offline` tags. `WIBER_OFFLINE_SERVER_IMAGE` pins the server image to one
    /// build (e.g. `wiber-server:<hash>` from `build.sh`'s summary): the `:offline` tag
    /// moves with every build, and the tests build it from a debug binary, which a
    /// benchmark must not pick up by accident.
    pub fn offline() -> Images {
        Images {
            flavor: ImageFlavor::Offline,
            kafka: "wiber-kafka:offline".into(),
            postgres: Some("wiber-postgres:offline".into()),
            mongo: "wiber-ferretdb:offline".into(),
            server: std::env::var("WIBER_OFFLINE_SERVER_IMAGE")
                .unwrap_or_else(|_| "wiber-server:offline".into()),
        }
    }

    pub fn official() -> Images {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
        Images {
            flavor: ImageFlavor::Official,
            kafka: var("WIBER_KAFKA_IMAGE", "apache/kafka:4.4.0"),
            postgres: None,
            mongo: var("WIBER_MONGO_IMAGE", "mongo:7"),
            server: var("WIBER_SERVER_IMAGE", "wiber-server:local"),
        }
    }

    pub fn all(&self) -> Vec<&str> {
        let mut all = vec![self.kafka.as_str()];
        all.extend(self.postgres.as_deref());
        all.extend([self.mongo.as_str(), self.server.as_str()]);
        all
    }
}

impl DockerStack {
    pub async fn image_present(&self, image: &str) -> bool {
        self.docker.inspect_image(image).await.is_ok()
    }

    /// Size of a local image in bytes.
    pub async fn image_size(&self, image: &str) -> Option<i64> {
        self.docker
            .inspect_image(image)
            .await
            .ok()
            .and_then(|i| i.size)
    }

    /// Pulls `image` (`name:tag`), bounded by `timeout`.
    pub async fn pull(&self, image: &str, timeout: Duration) -> Result<()> {
        let (name, tag) = match image.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t),
            _ => (image, "latest"),
        };
        let opts = CreateImageOptionsBuilder::new()
            .from_image(name)
            .tag(tag)
            .build();
        let pull = async {
            let mut stream = self.docker.create_image(Some(opts), None, None);
            while let Some(item) = stream.next().await {
                item.with_context(|| format!("pulling {image}"))?;
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(timeout, pull)
            .await
            .map_err(|_| anyhow!("pulling {image} did not finish within {timeout:?}"))?
    }

    /// True when the image defines its own healthcheck (the offline images do).
    pub(super) async fn image_has_healthcheck(&self, image: &str) -> bool {
        self.docker
            .inspect_image(image)
            .await
            .ok()
            .and_then(|i| i.config)
            .and_then(|c| c.healthcheck)
            .and_then(|h| h.test)
            .is_some_and(|t| t.first().map(String::as_str) != Some("NONE"))
    }
}

/// Picks the images per `--images`, pulling or building what is missing.
pub(super) async fn resolve(
    d: &DockerStack,
    choice: ImageChoice,
    progress: &(dyn Fn(UpEvent) + Sync),
) -> Result<Images> {
    let official = Images::official();
    match choice {
        ImageChoice::Offline => ensure_offline(d, progress).await,
        ImageChoice::Official => {
            ensure_official(d, progress, &official, Duration::from_secs(600)).await?;
            Ok(official)
        }
        ImageChoice::Auto => {
            // A short bound: where no registry is reachable the attempt must not stall `up`.
            match ensure_official(d, progress, &official, Duration::from_secs(20)).await {
                Ok(()) => Ok(official),
                Err(e) => {
                    progress(UpEvent::Note(format!(
                        "official images unavailable ({e:#}); using the offline images instead"
                    )));
                    ensure_offline(d, progress).await
                }
            }
        }
    }
}

/// Pulls the official kafka and mongo images (all pulls within `pull_budget`) and builds
/// our server image when missing.
async fn ensure_official(
    d: &DockerStack,
    progress: &(dyn Fn(UpEvent) + Sync),
    images: &Images,
    pull_budget: Duration,
) -> Result<()> {
    let pulls = async {
        for image in [&images.kafka, &images.mongo] {
            if !d.image_present(image).await {
                progress(UpEvent::Note(format!("pulling {image}")));
                d.pull(image, pull_budget).await?;
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(pull_budget, pulls)
        .await
        .map_err(|_| {
            anyhow::anyhow!("pulling the official images did not finish within {pull_budget:?}")
        })??;
    if !d.image_present(&images.server).await {
        // Our server image: the prebuilt release binary on debian:bookworm-slim, as the
        // compose file builds it (legacy builder: the client here has no buildx).
        let root = provision::repo_root()?;
        let bin = root.join("target/release/wiber-server");
        if !bin.is_file() {
            bail!(
                "{} not found: build it with `cargo build --release -p wiber-server` (the official path copies it into {})",
                bin.display(),
                images.server
            );
        }
        progress(UpEvent::Note(format!(
            "building {} from docker/Dockerfile.server",
            images.server
        )));
        run_script(
            std::process::Command::new("docker")
                .current_dir(&root)
                .env("DOCKER_BUILDKIT", "0")
                .args([
                    "build",
                    "-f",
                    "docker/Dockerfile.server",
                    "-t",
                    &images.server,
                    ".",
                ]),
            "docker build of the server image",
        )?;
    }
    Ok(())
}

/// Uses the :offline images, running docker/offline/build.sh for the missing ones.
async fn ensure_offline(d: &DockerStack, progress: &(dyn Fn(UpEvent) + Sync)) -> Result<Images> {
    let images = Images::offline();
    let mut missing = Vec::new();
    for (what, image) in [
        ("kafka", Some(&images.kafka)),
        ("postgres", images.postgres.as_ref()),
        ("ferretdb", Some(&images.mongo)),
        ("server", Some(&images.server)),
    ] {
        if let Some(image) = image {
            if !d.image_present(image).await {
                missing.push(what);
            }
        }
    }
    if missing.contains(&"server") && std::env::var_os("WIBER_OFFLINE_SERVER_IMAGE").is_some() {
        bail!(
            "WIBER_OFFLINE_SERVER_IMAGE={} is not on this engine: build it (docker/offline/build.sh \
             --only server prints its tag) or unset the variable",
            images.server
        );
    }
    if !missing.is_empty() {
        let root = provision::repo_root()?;
        let mut cmd = std::process::Command::new(root.join("docker/offline/build.sh"));
        cmd.args(["--only", &missing.join(",")]).current_dir(&root);
        if missing.contains(&"server") && std::env::var_os("WIBER_SERVER_BIN").is_none() {
            // Prefer the release binary (what build.sh expects), else a debug build.
            let release = root.join("target/release/wiber-server");
            let debug = root.join("target/debug/wiber-server");
            if !release.is_file() && debug.is_file() {
                progress(UpEvent::Note(format!(
                    "note: no release build of wiber-server; the image gets {}",
                    debug.display()
                )));
                cmd.env("WIBER_SERVER_BIN", debug);
            }
        }
        progress(UpEvent::Note(format!(
            "building the offline images {} with docker/offline/build.sh",
            missing.join(", ")
        )));
        // The build script's output goes to stderr so that --json stays parseable.
        run_script(&mut cmd, "docker/offline/build.sh")?;
    }
    progress(UpEvent::Note(format!(
        "using the offline images ({})",
        images.all().join(", ")
    )));
    Ok(images)
}

fn run_script(cmd: &mut std::process::Command, what: &str) -> Result<()> {
    let status = cmd
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status}); see its output above");
    }
    Ok(())
}
