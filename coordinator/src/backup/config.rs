//! The fleet file's `[clusters.backup]` table ([`BackupConfig`], defined in
//! `fleet::backup`) as `etcdops backup` uses it: the retention policy and
//! the S3 settings it makes.

use super::retention::Retention;
use super::target::S3Settings;
use crate::fleet::backup::BackupConfig;

/// What `etcdops backup` reads from a cluster's `[clusters.backup]`.
pub trait BackupSettings {
    /// The retention policy these fields make.
    fn retention(&self) -> Retention;
    /// How to reach an S3 target.
    fn s3(&self) -> S3Settings;
}

impl BackupSettings for BackupConfig {
    /// The retention policy these fields make.
    fn retention(&self) -> Retention {
        Retention {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_within: self.keep_within.clone(),
        }
    }

    /// How to reach an S3 target.
    fn s3(&self) -> S3Settings {
        S3Settings {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            allow_http: self.s3_allow_http,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(body: &str) -> BackupConfig {
        #[derive(serde::Deserialize)]
        struct Doc {
            backup: BackupConfig,
        }
        toml::from_str::<Doc>(&format!("[backup]\n{body}"))
            .expect("parses")
            .backup
    }

    #[test]
    fn the_table_makes_the_policy_and_the_s3_settings() {
        let c = config(
            "target = \"s3://etcd-backups/prod-a\"\ns3_endpoint = \"http://127.0.0.1:9000\"\ns3_region = \"eu-west-1\"\n\
             s3_allow_http = true\nkeep_last = 3\nkeep_hourly = 24\nkeep_daily = 7\nkeep_within = \"7d\"\n",
        );
        let s3 = c.s3();
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s3.region, "eu-west-1");
        assert!(s3.allow_http);
        assert_eq!(
            c.retention().describe(),
            "keep_last 3, keep_hourly 24, keep_daily 7, keep_within 7d"
        );
        assert!(
            config("target = \"file:///var/backups/etcd\"\n")
                .retention()
                .is_empty()
        );
    }
}
