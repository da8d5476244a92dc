//! Full-state checkpoints in one safetensors file, written atomically.
//!
//! A [`Checkpoint`] holds everything a run needs to continue exactly where it stopped: model
//! weights, optimizer moments and step counts, EMA weights (any [`TrainingState`]), the
//! training step, [`Rng`] positions, and configs as JSON. On disk it is one safetensors file:
//! tensors are named `"<section>/<name>"` (`"model/gen.fc.weight"`, `"opt_g/m.gen.fc.weight"`),
//! and the safetensors metadata holds the step, RNG states, configs and a checksum per tensor.
//!
//! Writing goes to a temporary file in the same directory, is synced, then renamed over the
//! target, so a crash mid-write leaves the previous checkpoint intact. Loading verifies the format,
//! every checksum (a flipped byte names the tensor it hit) and, when restoring into a model,
//! that names, shapes and dtypes match exactly.
//!
//! ```
//! use candle_core::{DType, Device};
//! use candle_nn::{VarBuilder, VarMap};
//! use candle_generative::io::Checkpoint;
//! use candle_generative::rng::Rng;
//!
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let _layer = candle_nn::linear(3, 2, vb.pp("fc"))?;
//! let mut ck = Checkpoint::new(100);
//! ck.add_varmap("model", &varmap)?;
//! ck.set_rng("train", &Rng::new(7));
//! let path = std::env::temp_dir().join("candle-generative-doc-checkpoint.safetensors");
//! ck.save(&path)?;
//!
//! let loaded = Checkpoint::load(&path)?;
//! assert_eq!(loaded.step(), 100);
//! loaded.restore_varmap("model", &varmap)?; // checks names, shapes and dtypes
//! let _rng = loaded.rng("train")?;
//! # Ok::<(), candle_generative::Error>(())
//! ```

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::safetensors::Load;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use safetensors::tensor::{Dtype as StDtype, SafeTensors, View};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::optim::{NamedVars, TrainingState};
use crate::rng::{Rng, RngState};
use crate::{Error, Result};

/// The format tag stored in every checkpoint's metadata.
pub const CHECKPOINT_FORMAT: &str = "candle-generative-checkpoint/1";

const KEY_FORMAT: &str = "format";
const KEY_STEP: &str = "step";
const KEY_CHECKSUMS: &str = "checksums";
const PREFIX_RNG: &str = "rng.";
const PREFIX_CONFIG: &str = "config.";
const PREFIX_META: &str = "meta.";

/// The whole state of a training run at one step; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    step: u64,
    tensors: BTreeMap<String, Tensor>,
    metadata: BTreeMap<String, String>,
    origin: PathBuf,
}

impl Checkpoint {
    /// An empty checkpoint for training step `step` (the number of optimizer steps taken).
    pub fn new(step: u64) -> Self {
        Self {
            step,
            tensors: BTreeMap::new(),
            metadata: BTreeMap::new(),
            origin: PathBuf::from("<unsaved checkpoint>"),
        }
    }

    /// The training step it was taken at.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The file it was loaded from (or a placeholder for one built in memory).
    pub fn path(&self) -> &Path {
        &self.origin
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::checkpoint(&self.origin, message)
    }

    fn check_section(section: &str) -> Result<()> {
        if section.is_empty() || section.contains('/') {
            return Err(Error::config("section", format!("`{section}` must be non-empty and without '/'")));
        }
        Ok(())
    }

    fn insert(&mut self, section: &str, name: &str, tensor: &Tensor) -> Result<()> {
        // Stored on the CPU, contiguous, detached: a snapshot, whatever happens to the var later.
        // `to_device` and `contiguous` return the same storage when there is nothing to do, and
        // `Var::set` writes in place, so `copy` is what makes this a snapshot.
        let t = tensor.detach().to_device(&Device::Cpu)?.copy()?;
        self.tensors.insert(format!("{section}/{name}"), t);
        Ok(())
    }

    /// Stores every variable of `varmap` (weights and buffers such as batch-norm statistics)
    /// under `section`.
    pub fn add_varmap(&mut self, section: &str, varmap: &VarMap) -> Result<()> {
        Self::check_section(section)?;
        let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        for (name, var) in data.iter() {
            self.insert(section, name, var.as_tensor())?;
        }
        Ok(())
    }

    /// Stores the given named variables under `section`.
    pub fn add_vars(&mut self, section: &str, vars: &NamedVars) -> Result<()> {
        Self::check_section(section)?;
        for (name, var) in vars.iter() {
            self.insert(section, name, var.as_tensor())?;
        }
        Ok(())
    }

    /// Stores an optimizer's or EMA's state under `section`.
    pub fn add_state(&mut self, section: &str, state: &impl TrainingState) -> Result<()> {
        Self::check_section(section)?;
        for (name, t) in state.state_tensors()? {
            self.insert(section, &name, &t)?;
        }
        Ok(())
    }

    /// Stores the exact position of `rng` under `name`.
    pub fn set_rng(&mut self, name: &str, rng: &Rng) {
        // RngState is plain data; serialising it to JSON cannot fail.
        let json = serde_json::to_string(&rng.state()).unwrap_or_default();
        self.metadata.insert(format!("{PREFIX_RNG}{name}"), json);
    }

    /// Stores a serde-serialisable config (a model's `Config`, the run's arguments) as JSON.
    pub fn set_config<T: Serialize>(&mut self, name: &str, config: &T) -> Result<()> {
        let json = serde_json::to_string(config)
            .map_err(|e| Error::config(name, format!("cannot serialise config to JSON: {e}")))?;
        self.metadata.insert(format!("{PREFIX_CONFIG}{name}"), json);
        Ok(())
    }

    /// Stores a free-form string (a note, a git revision, the data source).
    pub fn set_meta(&mut self, key: &str, value: impl Into<String>) {
        self.metadata.insert(format!("{PREFIX_META}{key}"), value.into());
    }

    /// A string stored with [`Checkpoint::set_meta`].
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(&format!("{PREFIX_META}{key}")).map(String::as_str)
    }

    /// The names stored under `section` (without the `section/` prefix), sorted.
    pub fn names(&self, section: &str) -> Vec<&str> {
        let p = format!("{section}/");
        self.tensors.keys().filter_map(|k| k.strip_prefix(&p)).collect()
    }

    /// One stored tensor (on the CPU), e.g. `tensor("model", "fc.weight")`.
    pub fn tensor(&self, section: &str, name: &str) -> Option<&Tensor> {
        self.tensors.get(&format!("{section}/{name}"))
    }

    fn section(&self, section: &str) -> HashMap<String, Tensor> {
        let p = format!("{section}/");
        self.tensors.iter().filter_map(|(k, t)| k.strip_prefix(&p).map(|n| (n.to_string(), t.clone()))).collect()
    }

    fn restore_pairs<'a>(&self, section: &str, targets: impl Iterator<Item = (&'a str, &'a Tensor)>) -> Result<()> {
        let stored = self.section(section);
        if stored.is_empty() {
            return Err(self.err(format!("has no section `{section}`")));
        }
        let mut expected: Vec<(&str, &Tensor)> = targets.collect();
        expected.sort_by(|a, b| a.0.cmp(b.0));
        // Check everything before writing anything, so a mismatch leaves the model untouched.
        for (name, target) in &expected {
            let t = stored.get(*name).ok_or_else(|| self.err(format!("`{section}/{name}` is missing")))?;
            let (t, target): (&Tensor, &Tensor) = (t, target);
            if t.dims() != target.dims() || Tensor::dtype(t) != Tensor::dtype(target) {
                return Err(self.err(format!(
                    "`{section}/{name}` is {:?} {:?} in the file but {:?} {:?} in the model",
                    Tensor::dtype(t),
                    t.dims(),
                    Tensor::dtype(target),
                    target.dims()
                )));
            }
        }
        if let Some(extra) = stored.keys().find(|k| !expected.iter().any(|(n, _)| n == k)) {
            return Err(self.err(format!("`{section}/{extra}` is in the file but not in the model")));
        }
        Ok(())
    }

    /// Loads the weights of `section` into `varmap`'s existing variables (on their device).
    /// Every variable must be in the file with its shape and dtype, and the file must hold no
    /// variable the map lacks; on a mismatch nothing is changed and the error names it.
    pub fn restore_varmap(&self, section: &str, varmap: &VarMap) -> Result<()> {
        let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        self.restore_pairs(section, data.iter().map(|(n, v)| (n.as_str(), v.as_tensor())))?;
        for (name, var) in data.iter() {
            let t = &self.tensors[&format!("{section}/{name}")];
            var.set(&t.to_device(var.device())?)?;
        }
        Ok(())
    }

    /// Loads `section` into the given variables, with the checks of [`Checkpoint::restore_varmap`].
    pub fn restore_vars(&self, section: &str, vars: &NamedVars) -> Result<()> {
        self.restore_pairs(section, vars.iter().map(|(n, v)| (n, v.as_tensor())))?;
        for (name, var) in vars.iter() {
            let t = &self.tensors[&format!("{section}/{name}")];
            var.set(&t.to_device(var.device())?)?;
        }
        Ok(())
    }

    /// Restores an optimizer's or EMA's state from `section`.
    pub fn restore_state(&self, section: &str, state: &mut impl TrainingState) -> Result<()> {
        let stored = self.section(section);
        if stored.is_empty() {
            return Err(self.err(format!("has no section `{section}`")));
        }
        state.load_state_tensors(&stored).map_err(|e| self.err(format!("section `{section}`: {e}")))
    }

    /// The generator stored under `name`, at the position it had when saved.
    pub fn rng(&self, name: &str) -> Result<Rng> {
        let json = self
            .metadata
            .get(&format!("{PREFIX_RNG}{name}"))
            .ok_or_else(|| self.err(format!("has no RNG state `{name}`")))?;
        let state: RngState =
            serde_json::from_str(json).map_err(|e| self.err(format!("RNG state `{name}` is corrupt: {e}")))?;
        Ok(Rng::from_state(&state))
    }

    /// The config stored under `name`.
    pub fn config<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let json = self
            .metadata
            .get(&format!("{PREFIX_CONFIG}{name}"))
            .ok_or_else(|| self.err(format!("has no config `{name}`")))?;
        serde_json::from_str(json).map_err(|e| self.err(format!("config `{name}` does not parse: {e}")))
    }

    /// Writes the checkpoint to `path` atomically (temporary file, sync, rename), creating the
    /// parent directory. A failure at any point leaves an existing file at `path` untouched.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let bytes = self.to_bytes()?;
        write_atomic(path.as_ref(), &bytes, None)
    }

    fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut views = Vec::with_capacity(self.tensors.len());
        let mut checksums = BTreeMap::new();
        for (name, t) in &self.tensors {
            let view = RawView::of(t)?;
            checksums.insert(name.clone(), format!("{:016x}", fnv1a64(&view.bytes)));
            views.push((name.clone(), view));
        }
        let mut meta: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        meta.insert(KEY_FORMAT.into(), CHECKPOINT_FORMAT.into());
        meta.insert(KEY_STEP.into(), self.step.to_string());
        meta.insert(KEY_CHECKSUMS.into(), serde_json::to_string(&checksums).unwrap_or_default());
        safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::checkpoint(&self.origin, format!("cannot serialise: {e}")))
    }

    /// Reads and verifies a checkpoint: the safetensors structure, the format tag, the step and
    /// every tensor's checksum. Tensors are loaded on the CPU; restoring moves them to each
    /// variable's device.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |m: String| Error::checkpoint(path, m);
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a readable safetensors file (truncated or corrupt?): {e}")))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("bad header: {e}")))?;
        let mut metadata: BTreeMap<String, String> =
            header.metadata().clone().unwrap_or_default().into_iter().collect();
        match metadata.remove(KEY_FORMAT) {
            Some(f) if f == CHECKPOINT_FORMAT => {}
            Some(f) => return Err(bad(format!("format `{f}`, expected `{CHECKPOINT_FORMAT}`"))),
            None => return Err(bad(format!("not a {CHECKPOINT_FORMAT} file (no format tag)"))),
        }
        let step = metadata
            .remove(KEY_STEP)
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| bad("missing or bad `step`".into()))?;
        let checksums: BTreeMap<String, String> = metadata
            .remove(KEY_CHECKSUMS)
            .and_then(|s| serde_json::from_str(&s).ok())
            .ok_or_else(|| bad("missing or bad checksums".into()))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let expected = checksums.get(&name).ok_or_else(|| bad(format!("tensor `{name}` has no checksum")))?;
            let actual = format!("{:016x}", fnv1a64(view.data()));
            if &actual != expected {
                return Err(bad(format!("tensor `{name}` is corrupt (checksum {actual}, expected {expected})")));
            }
            let t = view.load(&Device::Cpu).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            tensors.insert(name, t);
        }
        if let Some(missing) = checksums.keys().find(|k| !tensors.contains_key(*k)) {
            return Err(bad(format!("tensor `{missing}` is listed but missing")));
        }
        Ok(Self { step, tensors, metadata, origin: path.to_path_buf() })
    }
}

/// A tensor's raw little-endian bytes, so the checksum and the file see the same bytes.
struct RawView {
    dtype: StDtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl RawView {
    fn of(t: &Tensor) -> Result<Self> {
        // `insert` made `t` a contiguous CPU tensor, for which candle's conversion cannot fail.
        let bytes = View::data(t).into_owned();
        Ok(Self { dtype: View::dtype(t), shape: t.dims().to_vec(), bytes })
    }
}

impl View for RawView {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// FNV-1a, 64 bit (Fowler, Noll, Vo): detects flipped or shifted bytes; not a security measure.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
/// `fail_after` (tests only) makes the write stop with an error after that many bytes.
fn write_atomic(path: &Path, bytes: &[u8], fail_after: Option<usize>) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let file_name = path.file_name().ok_or_else(|| Error::checkpoint(path, "is not a file path"))?;
    let tmp = dir.join(format!(".{}.tmp{}", file_name.to_string_lossy(), std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        match fail_after {
            Some(n) => {
                f.write_all(&bytes[..n.min(bytes.len())])?;
                return Err(std::io::Error::other("simulated failure during the write"));
            }
            None => f.write_all(bytes)?,
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    // Make the rename durable; not all platforms can sync a directory, so this is best effort.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A directory of checkpoints `"{prefix}-{step:08}.safetensors"` keeping the last `keep_last`.
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    dir: PathBuf,
    prefix: String,
    keep_last: usize,
}

impl CheckpointDir {
    /// Checkpoints named `prefix-<step>.safetensors` in `dir`, of which the newest `keep_last`
    /// (at least 1) are kept.
    pub fn new(dir: impl Into<PathBuf>, prefix: &str, keep_last: usize) -> Result<Self> {
        if keep_last == 0 {
            return Err(Error::config("keep_last", "must be at least 1"));
        }
        if prefix.is_empty() || prefix.contains(['/', '\\']) {
            return Err(Error::config("prefix", format!("`{prefix}` must be a non-empty file-name prefix")));
        }
        Ok(Self { dir: dir.into(), prefix: prefix.to_string(), keep_last })
    }

    /// The directory the checkpoints are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a checkpoint of `step` is written to.
    pub fn path_for(&self, step: u64) -> PathBuf {
        self.dir.join(format!("{}-{step:08}.safetensors", self.prefix))
    }

    /// Saves `ck` as the file of its step, then deletes all but the newest `keep_last`.
    pub fn save(&self, ck: &Checkpoint) -> Result<PathBuf> {
        let path = self.path_for(ck.step());
        ck.save(&path)?;
        let all = self.list()?;
        for (_, old) in all.iter().take(all.len().saturating_sub(self.keep_last)) {
            std::fs::remove_file(old).map_err(|e| Error::io(old, e))?;
        }
        Ok(path)
    }

    /// The checkpoints present, oldest first, with their steps.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        let head = format!("{}-", self.prefix);
        let mut found = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| Error::io(&self.dir, e))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let step = name.strip_prefix(&head).and_then(|r| r.strip_suffix(".safetensors"));
            if let Some(step) = step.and_then(|s| s.parse::<u64>().ok()) {
                found.push((step, path));
            }
        }
        found.sort();
        Ok(found)
    }

    /// The newest checkpoint, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        Ok(self.list()?.pop().map(|(_, p)| p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use candle_nn::VarBuilder;

    fn model(seed: u64) -> Result<VarMap> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        candle_nn::linear(4, 3, vb.pp("fc"))?;
        candle_nn::conv2d(1, 2, 3, Default::default(), vb.pp("conv"))?;
        let mut rng = Rng::new(seed);
        for var in vm.all_vars() {
            var.set(&rng.randn_like(var.as_tensor())?)?;
        }
        Ok(vm)
    }

    fn values(vm: &VarMap) -> Result<BTreeMap<String, Vec<f32>>> {
        let data = vm.data().lock().unwrap();
        data.iter().map(|(n, v)| Ok((n.clone(), v.flatten_all()?.to_vec1::<f32>()?))).collect()
    }

    #[test]
    fn round_trip_restores_everything() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("ck.safetensors");
        let src = model(1)?;
        let mut rng = Rng::new(3);
        rng.normal_vec(5);
        let mut ck = Checkpoint::new(42);
        ck.add_varmap("model", &src)?;
        ck.set_rng("data", &rng);
        ck.set_config("run", &serde_json::json!({"lr": 0.001, "name": "x"}))?;
        ck.set_meta("note", "hello");
        ck.save(&path)?;

        let dst = model(2)?;
        assert_ne!(values(&src)?, values(&dst)?);
        let back = Checkpoint::load(&path)?;
        back.restore_varmap("model", &dst)?;
        assert_eq!(values(&src)?, values(&dst)?);
        assert_eq!(back.step(), 42);
        assert_eq!(back.rng("data")?.normal_vec(3), rng.normal_vec(3));
        let cfg: serde_json::Value = back.config("run")?;
        assert_eq!(cfg["name"], "x");
        assert_eq!(back.meta("note"), Some("hello"));
        assert_eq!(back.names("model"), vec!["conv.bias", "conv.weight", "fc.bias", "fc.weight"]);
        Ok(())
    }

    #[test]
    fn a_checkpoint_is_a_snapshot() -> Result<()> {
        let vm = model(1)?;
        let mut ck = Checkpoint::new(0);
        ck.add_varmap("model", &vm)?;
        let before = ck.tensor("model", "fc.bias").unwrap().to_vec1::<f32>()?;
        for var in vm.all_vars() {
            var.set(&var.as_tensor().zeros_like()?)?;
        }
        assert_eq!(ck.tensor("model", "fc.bias").unwrap().to_vec1::<f32>()?, before);
        Ok(())
    }

    #[test]
    fn mismatches_name_the_tensor_and_change_nothing() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("ck.safetensors");
        let mut ck = Checkpoint::new(1);
        ck.add_varmap("model", &model(1)?)?;
        ck.save(&path)?;
        let ck = Checkpoint::load(&path)?;

        // A model with a wider layer: shape mismatch, named, and the model keeps its weights.
        let other = VarMap::new();
        let vb = VarBuilder::from_varmap(&other, DType::F32, &Device::Cpu);
        candle_nn::linear(4, 5, vb.pp("fc"))?;
        candle_nn::conv2d(1, 2, 3, Default::default(), vb.pp("conv"))?;
        let before = values(&other)?;
        let e = ck.restore_varmap("model", &other).unwrap_err().to_string();
        assert!(e.contains("fc.") && e.contains("[5"), "{e}");
        assert_eq!(before, values(&other)?);

        // Missing and extra names, wrong dtype, missing section.
        let small = VarMap::new();
        candle_nn::linear(4, 3, VarBuilder::from_varmap(&small, DType::F32, &Device::Cpu).pp("fc"))?;
        let e = ck.restore_varmap("model", &small).unwrap_err().to_string();
        assert!(e.contains("model/conv") && e.contains("not in the model"), "{e}");
        let half = VarMap::new();
        let vb = VarBuilder::from_varmap(&half, DType::F16, &Device::Cpu);
        candle_nn::linear(4, 3, vb.pp("fc"))?;
        candle_nn::conv2d(1, 2, 3, Default::default(), vb.pp("conv"))?;
        assert!(ck.restore_varmap("model", &half).unwrap_err().to_string().contains("F16"));
        assert!(matches!(ck.restore_varmap("ema", &half), Err(Error::Checkpoint { .. })));
        assert!(matches!(ck.rng("nope"), Err(Error::Checkpoint { .. })));
        Ok(())
    }

    #[test]
    fn truncated_or_tampered_files_are_refused() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("ck.safetensors");
        let mut ck = Checkpoint::new(5);
        ck.add_varmap("model", &model(1)?)?;
        ck.save(&path)?;
        let bytes = std::fs::read(&path).unwrap();

        for cut in [3, 20, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let e = Checkpoint::load(&path).unwrap_err();
            assert!(matches!(e, Error::Checkpoint { .. }), "cut {cut}: {e}");
            assert!(e.to_string().contains("ck.safetensors"), "{e}");
        }
        // Flip one byte of the last tensor's data: the checksum names the tensor.
        let mut tampered = bytes.clone();
        let last = tampered.len() - 2;
        tampered[last] ^= 0x55;
        std::fs::write(&path, &tampered).unwrap();
        let e = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(e.contains("corrupt") && e.contains("model/"), "{e}");
        // Not a checkpoint of this crate: a plain safetensors file without the format tag.
        candle_core::safetensors::save(&HashMap::from([("x", Tensor::zeros(2, DType::F32, &Device::Cpu)?)]), &path)?;
        assert!(Checkpoint::load(&path).unwrap_err().to_string().contains("format"));
        Ok(())
    }

    #[test]
    fn a_failed_write_keeps_the_previous_checkpoint() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("ck.safetensors");
        let mut first = Checkpoint::new(1);
        first.add_varmap("model", &model(1)?)?;
        first.save(&path)?;
        let mut second = Checkpoint::new(2);
        second.add_varmap("model", &model(2)?)?;
        let bytes = second.to_bytes()?;
        assert!(write_atomic(&path, &bytes, Some(bytes.len() / 2)).is_err());
        assert_eq!(Checkpoint::load(&path)?.step(), 1);
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "the temporary file was not removed");
        Ok(())
    }

    #[test]
    fn rotation_keeps_the_last_n() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let cd = CheckpointDir::new(dir.path(), "run", 2)?;
        assert_eq!(cd.latest()?, None);
        for step in [10, 20, 30] {
            cd.save(&Checkpoint::new(step))?;
        }
        let steps: Vec<u64> = cd.list()?.into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![20, 30]);
        assert_eq!(cd.latest()?, Some(cd.path_for(30)));
        assert!(CheckpointDir::new(dir.path(), "run", 0).is_err());
        Ok(())
    }
}
