//! Training logs in JSON lines: one JSON object per line, one line per logged step.
//!
//! [`MetricsLog`] writes lines such as
//! `{"step":100,"time_s":12.5,"loss_d":0.693,"loss_g":1.204}` and flushes each line to the
//! operating system as it is written, so a crashed run loses at most the line it was writing.
//! [`read_metrics_log`] reads a log back as one [`serde_json::Map`] per line, for plots, for
//! comparing runs or for finding where a resumed run left off.
//!
//! JSON has no NaN or infinity: a non-finite value is written as `null`, and reads back as
//! [`serde_json::Value::Null`]. A diverging loss therefore shows as a gap in a plot rather than
//! as a file no JSON reader accepts.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Map, Value};

use crate::{Error, Result};

/// The keys every line starts with; scalars and records may not reuse them.
const RESERVED_KEYS: [&str; 2] = ["step", "time_s"];

/// An append-only training log in JSON lines.
///
/// Each call to [`log`](Self::log) or [`log_json`](Self::log_json) writes one line, an object
/// whose first keys are `"step"` (the training step) and `"time_s"` (seconds since the log was
/// opened, rounded to milliseconds; for a log opened with [`append`](Self::append), plus the
/// last `time_s` already in the file, so the clock of a resumed run carries on). Each line is
/// written with one `write` call and flushed before `log` returns; it is not `fsync`ed (call
/// [`sync`](Self::sync) for that), so a process crash loses at most the line being written.
///
/// Non-finite values (NaN, ±infinity) are written as `null`, because JSON has no such numbers.
///
/// ```
/// use candle_generative::io::{read_metrics_log, MetricsLog};
///
/// let path = std::env::temp_dir().join(format!("candle-generative-doc-{}/train.jsonl", std::process::id()));
/// let mut log = MetricsLog::create(&path)?;
/// log.log(0, &[("loss_d", 0.693), ("loss_g", 1.204)])?;
/// log.log(1, &[("loss_d", f64::NAN)])?; // written as null
/// log.log_json(1, serde_json::json!({ "event": "checkpoint", "file": "step1.safetensors" }))?;
/// drop(log);
///
/// let lines = read_metrics_log(&path)?;
/// assert_eq!(lines.len(), 3);
/// assert_eq!(lines[0]["loss_g"], 1.204);
/// assert!(lines[1]["loss_d"].is_null());
/// assert_eq!(lines[2]["event"], "checkpoint");
/// # std::fs::remove_dir_all(path.parent().unwrap()).ok();
/// # Ok::<(), candle_generative::Error>(())
/// ```
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
    opened: Instant,
    time_offset_s: f64,
}

impl MetricsLog {
    /// Creates the log file at `path`, truncating an existing one and creating missing parent
    /// directories. `time_s` starts at 0.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        create_parent(path)?;
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        Ok(Self { path: path.to_path_buf(), file, opened: Instant::now(), time_offset_s: 0.0 })
    }

    /// Opens the log at `path` for appending, as a resumed run does; creates it (and missing
    /// parent directories) when it does not exist.
    ///
    /// `time_s` continues from the last `time_s` found in the file. A last line without its
    /// newline, the trace of a run that crashed while writing it, is cut off first, so the new
    /// lines do not run into it.
    pub fn append(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        create_parent(path)?;
        let mut file = OpenOptions::new()
            .read(true)
            .create(true)
            .truncate(false)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(|e| Error::io(path, e))?;
        let complete_len = text.rfind('\n').map_or(0, |i| i + 1);
        if complete_len < text.len() {
            file.set_len(complete_len as u64).map_err(|e| Error::io(path, e))?;
            // In append mode every write goes to the end anyway; the seek only keeps the
            // file position consistent with the new length.
            file.seek(SeekFrom::End(0)).map_err(|e| Error::io(path, e))?;
        }
        let time_offset_s = text[..complete_len]
            .lines()
            .rev()
            .filter_map(|line| serde_json::from_str::<Map<String, Value>>(line).ok())
            .find_map(|record| record.get("time_s").and_then(Value::as_f64))
            .unwrap_or(0.0);
        Ok(Self { path: path.to_path_buf(), file, opened: Instant::now(), time_offset_s })
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Seconds since the log was opened plus, for an appended log, the last `time_s` of the file.
    pub fn elapsed_s(&self) -> f64 {
        self.time_offset_s + self.opened.elapsed().as_secs_f64()
    }

    /// Writes one line `{"step":step,"time_s":..,"name":value,...}` with the scalars in the
    /// given order, and flushes it. Non-finite values are written as `null`.
    ///
    /// Returns `Error::Config` when a name is repeated or is `"step"` or `"time_s"`, and
    /// `Error::Io` when the file cannot be written.
    pub fn log(&mut self, step: u64, scalars: &[(&str, f64)]) -> Result<()> {
        for (i, (name, _)) in scalars.iter().enumerate() {
            check_key(name)?;
            if scalars[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(Error::config("MetricsLog::log", format!("scalar `{name}` appears twice")));
            }
        }
        let fields = scalars.iter().map(|&(name, value)| (name, json_number(value)));
        self.write_line(step, fields)
    }

    /// Writes one line `{"step":step,"time_s":..,<the fields of record>}` and flushes it, for
    /// structured records such as a hyper-parameter trial's configuration and score.
    ///
    /// `record` must be a JSON object without the keys `"step"` and `"time_s"`, else
    /// `Error::Config`. Its fields are written in the map's order (sorted by key unless
    /// serde_json's `preserve_order` feature is on). Non-finite numbers cannot occur in a
    /// [`serde_json::Value`], which stores them as `null` already.
    pub fn log_json(&mut self, step: u64, record: Value) -> Result<()> {
        let Value::Object(map) = record else {
            return Err(Error::config("MetricsLog::log_json", "the record must be a JSON object"));
        };
        for key in map.keys() {
            check_key(key)?;
        }
        self.write_line(step, map.iter().map(|(k, v)| (k.as_str(), v.clone())))
    }

    /// Flushes the file's data to the storage device (`fsync`), for logs that must survive a
    /// power loss, not only a crash of the process.
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }

    fn write_line<'a>(&mut self, step: u64, fields: impl Iterator<Item = (&'a str, Value)>) -> Result<()> {
        let time_s = (self.elapsed_s() * 1000.0).round() / 1000.0;
        let mut line = format!("{{\"step\":{step},\"time_s\":{}", json_number(time_s));
        for (key, value) in fields {
            // Serialising a string or a `Value` to a `String` cannot fail: no I/O is involved and
            // every map key is a string.
            let key = serde_json::to_string(key).expect("a string serialises");
            let value = serde_json::to_string(&value).expect("a JSON value serialises");
            line.push(',');
            line.push_str(&key);
            line.push(':');
            line.push_str(&value);
        }
        line.push_str("}\n");
        // One `write_all` of the whole line: a crash leaves at most this line incomplete.
        self.file.write_all(line.as_bytes()).map_err(|e| Error::io(&self.path, e))?;
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// Reads a JSON-lines log written by [`MetricsLog`] (or any file of one JSON object per line).
///
/// Returns one map per non-empty line, in file order; non-finite values written as `null` read
/// back as [`Value::Null`]. A line that is not a JSON object gives `Error::Data` naming the
/// file and the line number (from 1), except a malformed last line without its newline: that is
/// the line a crashed run was writing, and it is skipped.
///
/// Numbers are parsed by serde_json's default float parser, which can be one unit in the last
/// place off the written value (it is exact only with serde_json's `float_roundtrip` feature);
/// compare read-back floats with a relative tolerance of about `1e-15`.
pub fn read_metrics_log(path: impl AsRef<Path>) -> Result<Vec<Map<String, Value>>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let unterminated_tail = !text.is_empty() && !text.ends_with('\n');
    let n_lines = text.lines().count();
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(map)) => records.push(map),
            Err(_) if unterminated_tail && i + 1 == n_lines => {}
            Ok(_) => return Err(Error::data(path, format!("line {}: not a JSON object", i + 1))),
            Err(e) => return Err(Error::data(path, format!("line {}: {e}", i + 1))),
        }
    }
    Ok(records)
}

/// A JSON number, or `null` for NaN and infinities (JSON has neither).
fn json_number(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

fn check_key(key: &str) -> Result<()> {
    if RESERVED_KEYS.contains(&key) {
        return Err(Error::config("MetricsLog", format!("`{key}` is written by the log itself; use another name")));
    }
    Ok(())
}

fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_in_order_with_nulls_for_non_finite() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("nested/dir/log.jsonl");
        let mut log = MetricsLog::create(&path)?;
        log.log(0, &[("loss_d", 0.5), ("loss_g", 1.25)])?;
        log.log(10, &[("loss_d", f64::NAN), ("loss_g", f64::INFINITY), ("lr", 2e-4)])?;
        drop(log);

        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let first = text.lines().next().unwrap_or_default();
        assert!(first.starts_with("{\"step\":0,\"time_s\":"), "{first}");
        assert!(first.ends_with(",\"loss_d\":0.5,\"loss_g\":1.25}"), "{first}");

        let lines = read_metrics_log(&path)?;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["step"], 10);
        assert!(lines[1]["loss_d"].is_null() && lines[1]["loss_g"].is_null());
        assert_eq!(lines[1]["lr"], 2e-4);
        assert!(lines.iter().all(|l| l["time_s"].as_f64().is_some_and(|t| t >= 0.0)));
        Ok(())
    }

    #[test]
    fn create_truncates_and_append_continues_the_clock() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("log.jsonl");
        std::fs::write(&path, "{\"step\":0,\"time_s\":100.0}\n{\"step\":5,\"time_s\":250.5,\"loss\":1}\n")
            .map_err(|e| Error::io(&path, e))?;
        let mut log = MetricsLog::append(&path)?;
        assert!(log.elapsed_s() >= 250.5);
        log.log(6, &[("loss", 0.9)])?;
        drop(log);
        let lines = read_metrics_log(&path)?;
        assert_eq!(lines.len(), 3);
        let t = lines[2]["time_s"].as_f64().unwrap_or_default();
        assert!((250.5..260.0).contains(&t), "time_s {t}");

        let mut log = MetricsLog::create(&path)?;
        log.log(0, &[])?;
        drop(log);
        assert_eq!(read_metrics_log(&path)?.len(), 1);

        // Appending to a missing file creates it.
        let fresh = dir.path().join("sub/new.jsonl");
        MetricsLog::append(&fresh)?.log(0, &[("x", 1.0)])?;
        assert_eq!(read_metrics_log(&fresh)?.len(), 1);
        Ok(())
    }

    #[test]
    fn crash_tail_is_skipped_on_read_and_cut_on_append() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("log.jsonl");
        std::fs::write(&path, "{\"step\":0,\"time_s\":1.0}\n{\"step\":1,\"ti").map_err(|e| Error::io(&path, e))?;
        assert_eq!(read_metrics_log(&path)?.len(), 1);
        let mut log = MetricsLog::append(&path)?;
        log.log(1, &[("loss", 0.5)])?;
        drop(log);
        let lines = read_metrics_log(&path)?;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["loss"], 0.5);
        Ok(())
    }

    #[test]
    fn malformed_lines_name_file_and_line() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("bad.jsonl");
        std::fs::write(&path, "{\"step\":0}\n\n{\"step\":1,}\n{\"step\":2}\n").map_err(|e| Error::io(&path, e))?;
        let err = read_metrics_log(&path).unwrap_err();
        assert!(matches!(err, Error::Data { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("bad.jsonl") && msg.contains("line 3"), "{msg}");

        std::fs::write(&path, "{\"step\":0}\n[1, 2]\n").map_err(|e| Error::io(&path, e))?;
        assert!(read_metrics_log(&path).unwrap_err().to_string().contains("line 2"));
        assert!(matches!(read_metrics_log(dir.path().join("missing.jsonl")), Err(Error::Io { .. })));
        Ok(())
    }

    #[test]
    fn reserved_and_repeated_names_are_refused() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("log.jsonl");
        let mut log = MetricsLog::create(&path)?;
        assert!(matches!(log.log(0, &[("step", 1.0)]), Err(Error::Config { .. })));
        assert!(matches!(log.log(0, &[("a", 1.0), ("a", 2.0)]), Err(Error::Config { .. })));
        assert!(matches!(log.log_json(0, serde_json::json!([1, 2])), Err(Error::Config { .. })));
        assert!(matches!(log.log_json(0, serde_json::json!({"time_s": 3})), Err(Error::Config { .. })));
        log.log_json(3, serde_json::json!({"trial": 2, "params": {"lr": 1e-3}, "score": null}))?;
        drop(log);
        let lines = read_metrics_log(&path)?;
        assert_eq!(lines.len(), 1, "refused records must not be written");
        assert_eq!(lines[0]["params"]["lr"], 1e-3);
        assert_eq!(lines[0]["step"], 3);
        Ok(())
    }
}
