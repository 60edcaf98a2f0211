//! The settings that decide which rows are written where, and their fingerprint: a
//! checkpoint made under other settings is not resumed.

use super::*;

impl Pipeline {
    /// Everything that decides which rows are written where, as `(setting, value)` pairs:
    /// source, target location and columns, filter, chunk size. Layout, comments,
    /// `parallel`, `if_exists` and file encoding options do not count.
    pub fn settings(&self) -> Vec<(String, String)> {
        let mut s = vec![
            ("source.url".to_string(), self.source.url.value.clone()),
            (
                "source.table".to_string(),
                format!("{:?}", self.source.table),
            ),
            // A one-column key shows as it did before composite keys, so checkpoints
            // written then still match.
            (
                "source.key".to_string(),
                match self.source.key.as_ref().map(|k| k.value.as_slice()) {
                    Some([one]) => format!("{:?}", Some(one)),
                    other => format!("{other:?}"),
                },
            ),
            (
                "source.csv".to_string(),
                format!("{:?}", self.csv_settings().0),
            ),
            (
                "target.url".to_string(),
                format!(
                    "{} ({:?})",
                    self.target.url.value,
                    self.target.location_format()
                ),
            ),
            (
                "target.table".to_string(),
                format!("{:?}", self.target.table),
            ),
            ("filter".to_string(), format!("{:?}", self.filter)),
            ("chunks.rows".to_string(), self.chunks.rows.to_string()),
        ];
        for (side, location) in [
            ("source", &self.source.location),
            ("target", &self.target.location),
        ] {
            if let Location::Postgres { schema, .. } | Location::Mysql { schema, .. } = location {
                s.push((format!("{side}.schema"), schema.clone()));
            }
        }
        if self.target.write_mode != WriteMode::Insert {
            s.push((
                "target.write_mode".to_string(),
                format!("{:?}", self.target.write_mode),
            ));
        }
        s.extend(self.csv_settings().1);
        for (name, ty) in &self.source.types {
            s.push((format!("source.types.{}", name.value), ty.value.to_string()));
        }
        for c in &self.checks {
            s.push((
                format!("checks.{}", c.name),
                format!("{:?} {:?} {:?}", c.column, c.kind.value, c.policy),
            ));
        }
        for (i, c) in self.target.columns.iter().enumerate() {
            let p = format!("target.columns.{}", c.name.value);
            s.push((format!("{p}.position"), i.to_string()));
            s.push((format!("{p}.type"), c.ty.value.to_string()));
            s.push((format!("{p}.expr"), format!("{:?}", c.expr.value)));
            s.push((format!("{p}.nullable"), c.nullable.to_string()));
            s.push((format!("{p}.primary_key"), c.primary_key.to_string()));
            if let Some(tz) = &c.timezone {
                s.push((format!("{p}.timezone"), tz.value.clone()));
            }
            if let Some(f) = &c.format {
                s.push((format!("{p}.format"), f.value.clone()));
            }
        }
        s
    }

    /// The CSV options as settings: the options whose change `retry --rejects` may accept
    /// (see [`crate::checkpoint::changes`]) are taken out of the rest and get keys of
    /// their own when they are not the default, so a pipeline that keeps the defaults has
    /// the settings it had before they existed.
    fn csv_settings(&self) -> (CsvOptions, Vec<(String, String)>) {
        let mut csv = self.source.csv.clone();
        let mut own = Vec::new();
        if csv.quoting == Quoting::Lenient {
            csv.quoting = Quoting::Strict;
            own.push(("source.csv.quoting".to_string(), "lenient".to_string()));
        }
        if csv.encoding != Encoding::Utf8 {
            own.push((
                "source.csv.encoding".to_string(),
                match csv.encoding {
                    Encoding::Latin1 => "latin1",
                    _ => "windows-1252",
                }
                .to_string(),
            ));
            csv.encoding = Encoding::Utf8;
        }
        (csv, own)
    }

    /// A hash of [`Pipeline::settings`]: a checkpoint made under another fingerprint is not
    /// resumed.
    pub fn fingerprint(&self) -> String {
        let text: String = self
            .settings()
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        blake3::hash(text.as_bytes()).to_hex()[..16].to_string()
    }
}
