//! Bring your own method: a strategy or an optimizer written in another crate runs through
//! clbench's configs, run store, reports and Slurm scripts like a built-in one, without a line
//! of clbench copied or changed.
//!
//! A method is a settings type (what its config block holds, read with serde) that implements
//! [`StrategyPlugin`] or [`OptimizerPlugin`]; a [`Registry`] maps config names to those types,
//! and the user's binary hands it to [`crate::cli::main`], which then runs every subcommand
//! (`validate`, `run`, `report`, `slurm`, `bench`, …) with it:
//!
//! ```no_run
//! use clbench::plugin::{Registry, StrategyPlugin};
//! use clbench::strategy::Strategy;
//!
//! /// `strategy: {name: nothing-new, note: 1}`: fine-tuning under another name.
//! #[derive(Debug, serde::Serialize, serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct NothingNew {
//!     note: f64,
//! }
//!
//! struct Plain;
//! impl Strategy for Plain {}
//!
//! impl StrategyPlugin for NothingNew {
//!     const ORIGIN: &'static str = clbench::origin!();
//!     fn build(&self, _batch_size: usize) -> Box<dyn Strategy> {
//!         Box::new(Plain)
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     clbench::cli::main(Registry::builtin().strategy::<NothingNew>("nothing-new"))
//! }
//! ```
//!
//! # What a plugin gets
//!
//! - **Its block, checked like a built-in one.** Every key of the block except `name` and
//!   `plugin` (reserved, below; for an optimizer also `lr` and `grapes`, which every optimizer
//!   has) is deserialized into the settings type, so `#[serde(deny_unknown_fields)]` turns a
//!   misspelt key into an error that names it, and [`StrategyPlugin::check`] / [`OptimizerPlugin::check`] return a
//!   [`KeyError`] for a value that cannot be used. Both stop `validate` and `run` with exit
//!   code 2, exactly as for a built-in method.
//! - **Its identity in the store.** Before runs are planned, the block is rewritten from the
//!   parsed settings (defaults written out) and gets the key `plugin: "<crate> <version>"` from
//!   the type's `ORIGIN` ([`crate::origin!`]). The block is part of each run's `run.yaml`, so
//!   the run id changes with the settings and the crate's version, and a store refuses to pool
//!   runs of one method made by two versions. `platform.json` lists the plugins a run used.
//! - **Everything after training.** `report` reads a plugin's runs from their stored blocks
//!   (no registry needed: a block with a `plugin` key is kept as written), and pairs a method
//!   with its `+grapes` twin as for any method.
//! - **GRAPES.** GRAPES scales the gradients before any optimizer sees them, so a plugin
//!   optimizer runs with and without GRAPES (`grapes:` in its block) like the built-in ones,
//!   and a plugin strategy's terms are trained with the method's GRAPES variant
//!   ([`crate::strategy::Context::grapes`]).
//!
//! Names may not be those of built-in methods or of another plugin: [`Registry::install`]
//! (called by [`crate::cli::main`]) says which, and the binary exits with code 2.

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};

use serde::{de::DeserializeOwned, Serialize};

use crate::strategy::Strategy;
use crate::validate::{Checked, KeyError};

/// `"<crate name> <crate version>"` of the crate in which it is written: the value of a
/// plugin's `ORIGIN`, so that runs record which version of the method made them.
#[macro_export]
macro_rules! origin {
    () => {
        concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION"))
    };
}

/// The key a plugin's block gets in every run's config: the plugin's `ORIGIN`.
pub const ORIGIN_KEY: &str = "plugin";

/// A continual-learning strategy from another crate: its settings, as its config block holds
/// them, and how it builds the runtime [`Strategy`] of a run.
pub trait StrategyPlugin:
    Serialize + DeserializeOwned + fmt::Debug + Send + Sync + 'static
{
    /// `"<crate> <version>"` of the crate that defines it: write `clbench::origin!()`.
    const ORIGIN: &'static str;

    /// Checks the values (the keys were checked by deserialization); the error names the key
    /// inside the block. Default: every value is accepted.
    fn check(&self) -> Checked<()> {
        Ok(())
    }

    /// The strategy of one run whose training steps take `batch_size` examples.
    fn build(&self, batch_size: usize) -> Box<dyn Strategy>;
}

/// An optimizer from another crate: an elementwise update rule with per-element state.
///
/// clbench keeps the state (`state_buffers()` buffers of each parameter tensor's size, zero
/// before the first update and after a reset), the learning rate (the block's `lr`, changed by
/// `training.lr_decay`), the per-tensor step count, the penalties that strategies add to the
/// gradients, and the threads: a large tensor is updated in chunks on several threads, so
/// [`OptimizerPlugin::update`] must treat every element on its own (as every built-in rule
/// does); then its results do not depend on the thread count.
pub trait OptimizerPlugin:
    Serialize + DeserializeOwned + fmt::Debug + Send + Sync + 'static
{
    /// `"<crate> <version>"` of the crate that defines it: write `clbench::origin!()`.
    const ORIGIN: &'static str;

    /// Checks the values (the keys were checked by deserialization); the error names the key
    /// inside the block. Default: every value is accepted.
    fn check(&self) -> Checked<()> {
        Ok(())
    }

    /// How many state values it keeps per parameter element.
    fn state_buffers(&self) -> usize;

    /// Updates one chunk of one parameter tensor in place: `p` the parameters, `g` their
    /// gradients (GRAPES and any strategy penalty included), `state[i]` the chunk of state
    /// buffer `i`, all of the same length.
    fn update(&self, step: &UpdateStep, p: &mut [f32], g: &[f32], state: &mut [&mut [f32]]);
}

/// What one update of one parameter tensor knows besides the values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateStep {
    /// The learning rate of this update.
    pub lr: f32,
    /// This tensor's updates so far, this one included (1 at the first update and at the first
    /// after a reset).
    pub step: u64,
    /// Index of the parameter tensor (in the model's parameter order).
    pub tensor: usize,
    /// Index of the chunk's first element inside the tensor.
    pub offset: usize,
}

/// A checked plugin strategy: builds the runtime strategy of a run.
pub(crate) trait BuildStrategy: fmt::Debug + Send + Sync {
    fn build(&self, batch_size: usize) -> Box<dyn Strategy>;
}

impl<S: StrategyPlugin> BuildStrategy for S {
    fn build(&self, batch_size: usize) -> Box<dyn Strategy> {
        StrategyPlugin::build(self, batch_size)
    }
}

/// A checked plugin optimizer's rule.
pub(crate) trait UpdateRule: fmt::Debug + Send + Sync {
    fn state_buffers(&self) -> usize;
    fn update(&self, step: &UpdateStep, p: &mut [f32], g: &[f32], state: &mut [&mut [f32]]);
}

impl<O: OptimizerPlugin> UpdateRule for O {
    fn state_buffers(&self) -> usize {
        OptimizerPlugin::state_buffers(self)
    }
    fn update(&self, step: &UpdateStep, p: &mut [f32], g: &[f32], state: &mut [&mut [f32]]) {
        OptimizerPlugin::update(self, step, p, g, state)
    }
}

/// One registered settings type, its type erased: parses a block's settings.
trait Kind<T: ?Sized>: Send + Sync {
    fn origin(&self) -> &'static str;
    /// The settings type (two registries are the same when their names map to the same types).
    fn settings_type(&self) -> std::any::TypeId;
    /// The typed settings of `settings` (the block without `name`, `plugin`, and for an
    /// optimizer `lr` and `grapes`), checked.
    fn parse(&self, settings: &serde_yaml::Mapping) -> Checked<Arc<T>>;
    /// `settings` as the parsed type writes them (defaults written out); `None` if they do not
    /// parse (the check reports why).
    fn normalize(&self, settings: &serde_yaml::Mapping) -> Option<serde_yaml::Mapping>;
}

struct Typed<S>(PhantomData<fn() -> S>);

/// Deserializes a plugin's settings; an error names the key where serde says which. (Read
/// from their YAML text, so that serde_yaml tracks the path of a value of the wrong type; the
/// line and column of that text, which is not the user's file, are dropped.)
fn deserialize<S: DeserializeOwned>(settings: &serde_yaml::Mapping) -> Checked<S> {
    let text = serde_yaml::to_string(settings).expect("a mapping serializes");
    serde_yaml::from_str(&text).map_err(|e| {
        let mut message = e.to_string();
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
        // `unknown field `k``, `missing field `k``, or `k: invalid type …`.
        let named = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|m| message.split(m).nth(1))
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string);
        let prefixed = message.split_once(": ").and_then(|(k, rest)| {
            settings
                .contains_key(k)
                .then(|| (k.to_string(), rest.to_string()))
        });
        match (named, prefixed) {
            (Some(key), _) => KeyError::new(key, message),
            (None, Some((key, rest))) => KeyError::new(key, rest),
            (None, None) => KeyError::new("", message),
        }
    })
}

fn normalized<S: Serialize + DeserializeOwned>(
    settings: &serde_yaml::Mapping,
) -> Option<serde_yaml::Mapping> {
    let parsed: S = deserialize(settings).ok()?;
    match serde_yaml::to_value(&parsed).ok()? {
        serde_yaml::Value::Mapping(m) => Some(m),
        _ => None,
    }
}

impl<S: StrategyPlugin> Kind<dyn BuildStrategy> for Typed<S> {
    fn origin(&self) -> &'static str {
        S::ORIGIN
    }
    fn settings_type(&self) -> std::any::TypeId {
        std::any::TypeId::of::<S>()
    }
    fn parse(&self, settings: &serde_yaml::Mapping) -> Checked<Arc<dyn BuildStrategy>> {
        let parsed: S = deserialize(settings)?;
        parsed.check()?;
        Ok(Arc::new(parsed))
    }
    fn normalize(&self, settings: &serde_yaml::Mapping) -> Option<serde_yaml::Mapping> {
        normalized::<S>(settings)
    }
}

impl<O: OptimizerPlugin> Kind<dyn UpdateRule> for Typed<O> {
    fn origin(&self) -> &'static str {
        O::ORIGIN
    }
    fn settings_type(&self) -> std::any::TypeId {
        std::any::TypeId::of::<O>()
    }
    fn parse(&self, settings: &serde_yaml::Mapping) -> Checked<Arc<dyn UpdateRule>> {
        let parsed: O = deserialize(settings)?;
        parsed.check()?;
        Ok(Arc::new(parsed))
    }
    fn normalize(&self, settings: &serde_yaml::Mapping) -> Option<serde_yaml::Mapping> {
        normalized::<O>(settings)
    }
}

/// The methods a binary knows besides the built-in ones: config names mapped to plugin
/// settings types.
#[derive(Default)]
pub struct Registry {
    strategies: BTreeMap<String, Arc<dyn Kind<dyn BuildStrategy>>>,
    optimizers: BTreeMap<String, Arc<dyn Kind<dyn UpdateRule>>>,
    /// Names that could not be registered, and why.
    problems: Vec<String>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("strategies", &self.strategies.keys().collect::<Vec<_>>())
            .field("optimizers", &self.optimizers.keys().collect::<Vec<_>>())
            .field("problems", &self.problems)
            .finish()
    }
}

/// Why a registry cannot be installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Names that shadow a built-in method or were registered twice.
    #[error("cannot register these methods: {}", .0.join("; "))]
    Names(Vec<String>),
    /// Another registry was installed before.
    #[error("a different registry of methods is already installed in this process")]
    AlreadyInstalled,
}

impl crate::error::InputError for RegistryError {
    fn is_input_error(&self) -> bool {
        true
    }
}

static INSTALLED: OnceLock<Registry> = OnceLock::new();

impl Registry {
    /// clbench's own methods only.
    pub fn builtin() -> Registry {
        Registry::default()
    }

    /// Adds the strategy `S` under the config name `name` (`strategy: {name: <name>, …}`).
    pub fn strategy<S: StrategyPlugin>(mut self, name: &str) -> Registry {
        let builtin = crate::strategy::STRATEGY_NAMES.contains(&name);
        self.note_name(
            "strategy",
            name,
            builtin,
            self.strategies.contains_key(name),
        );
        self.strategies
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Typed::<S>(PhantomData)));
        self
    }

    /// Adds the optimizer `O` under the config name `name` (`optimizer: {name: <name>, lr, …}`).
    pub fn optimizer<O: OptimizerPlugin>(mut self, name: &str) -> Registry {
        let builtin = crate::optim::OPTIMIZER_NAMES.contains(&name.to_ascii_lowercase().as_str());
        self.note_name(
            "optimizer",
            name,
            builtin,
            self.optimizers.contains_key(name),
        );
        self.optimizers
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Typed::<O>(PhantomData)));
        self
    }

    fn note_name(&mut self, what: &str, name: &str, builtin: bool, taken: bool) {
        if builtin {
            self.problems.push(format!(
                "{what} `{name}` is a built-in {what} of clbench: choose another name"
            ));
        } else if taken {
            self.problems
                .push(format!("{what} `{name}` is registered twice"));
        } else if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.problems.push(format!(
                "{what} `{name}`: a name is ASCII letters, digits, `-` and `_`"
            ));
        }
    }

    /// Makes this the registry of the process (configs are checked against it). Fails when a
    /// name shadows a built-in method or was registered twice, or when a different registry
    /// was installed before (installing the same names of the same types again does nothing).
    pub fn install(self) -> Result<(), RegistryError> {
        if !self.problems.is_empty() {
            return Err(RegistryError::Names(self.problems));
        }
        let signature = self.signature();
        match INSTALLED.set(self) {
            Ok(()) => Ok(()),
            Err(_) if INSTALLED.get().map(Registry::signature) == Some(signature) => Ok(()),
            Err(_) => Err(RegistryError::AlreadyInstalled),
        }
    }

    /// Every name with its settings type.
    fn signature(&self) -> Vec<(String, std::any::TypeId)> {
        let strategies = self
            .strategies
            .iter()
            .map(|(n, k)| (format!("strategy {n}"), k.settings_type()));
        let optimizers = self
            .optimizers
            .iter()
            .map(|(n, k)| (format!("optimizer {n}"), k.settings_type()));
        strategies.chain(optimizers).collect()
    }

    /// The installed registry, or the built-in one when none was installed.
    pub fn current() -> &'static Registry {
        static BUILTIN: OnceLock<Registry> = OnceLock::new();
        INSTALLED
            .get()
            .unwrap_or_else(|| BUILTIN.get_or_init(Registry::builtin))
    }

    /// Names of the registered strategies.
    pub fn strategy_names(&self) -> Vec<&str> {
        self.strategies.keys().map(String::as_str).collect()
    }

    /// Names of the registered optimizers.
    pub fn optimizer_names(&self) -> Vec<&str> {
        self.optimizers.keys().map(String::as_str).collect()
    }

    /// Checks a plugin strategy's block.
    pub(crate) fn check_strategy(&self, block: &PluginBlock) -> Checked<Arc<dyn BuildStrategy>> {
        let kind = self.strategies.get(&block.name).ok_or_else(|| {
            unknown(
                "strategy",
                &block.name,
                crate::strategy::STRATEGY_NAMES,
                self.strategy_names(),
            )
        })?;
        check_origin(kind.origin(), block)?;
        kind.parse(&block.settings)
    }

    /// Checks a plugin optimizer's block.
    pub(crate) fn check_optimizer(&self, block: &PluginBlock) -> Checked<Arc<dyn UpdateRule>> {
        let kind = self.optimizers.get(&block.name).ok_or_else(|| {
            unknown(
                "optimizer",
                &block.name,
                crate::optim::OPTIMIZER_NAMES,
                self.optimizer_names(),
            )
        })?;
        check_origin(kind.origin(), block)?;
        kind.parse(&block.settings)
    }

    /// The block as a run records it: settings written out by their type, and its origin.
    /// Unchanged when the name is not registered or the settings do not parse (the check
    /// says why).
    pub(crate) fn record_strategy(&self, block: PluginBlock) -> PluginBlock {
        match self.strategies.get(&block.name) {
            Some(kind) => block.recorded(kind.as_ref()),
            None => block,
        }
    }

    /// [`Registry::record_strategy`] for an optimizer's block.
    pub(crate) fn record_optimizer(&self, block: PluginBlock) -> PluginBlock {
        match self.optimizers.get(&block.name) {
            Some(kind) => block.recorded(kind.as_ref()),
            None => block,
        }
    }
}

/// A block that names `plugin: <origin>` must have been recorded by that version.
fn check_origin(origin: &str, block: &PluginBlock) -> Checked<()> {
    match &block.origin {
        Some(recorded) if recorded != origin => Err(KeyError::new(
            ORIGIN_KEY,
            format!(
                "this block was recorded by `{recorded}`, but this binary's `{}` is `{origin}`",
                block.name
            ),
        )),
        _ => Ok(()),
    }
}

fn unknown(what: &str, name: &str, builtin: &[&str], plugins: Vec<&str>) -> KeyError {
    let mut all: Vec<&str> = builtin.to_vec();
    all.extend(plugins.iter().copied());
    let hint = crate::yaml::did_you_mean(name, &all)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    let plugins = if plugins.is_empty() {
        String::new()
    } else {
        format!("; this binary's plugins: {}", plugins.join(", "))
    };
    KeyError::new(
        "name",
        format!(
            "unknown {what} `{name}`; expected one of {}{plugins}{hint}",
            builtin.join(", ")
        ),
    )
}

/// A plugin method's block as written in a config or recorded in a run: its name, the
/// version that recorded it (`plugin:`), and the rest of its keys, whose meaning only the
/// plugin knows.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginBlock {
    /// The registered name.
    pub name: String,
    /// `"<crate> <version>"`, written into every run's config (absent as the user writes it).
    pub origin: Option<String>,
    /// Every other key of the block (for an optimizer, besides `lr` and `grapes`).
    pub settings: serde_yaml::Mapping,
}

impl PluginBlock {
    /// Splits a block's mapping: `name`, `plugin` and, for an optimizer, the keys in `keep`
    /// (left in the returned remainder for the caller).
    pub(crate) fn split(
        mut map: serde_yaml::Mapping,
        keep: &[&str],
    ) -> Result<(PluginBlock, serde_yaml::Mapping), String> {
        let name = match map.shift_remove("name") {
            Some(serde_yaml::Value::String(s)) => s,
            Some(_) => return Err("`name` must be a string".into()),
            None => return Err("missing field `name`".into()),
        };
        let origin = match map.shift_remove(ORIGIN_KEY) {
            Some(serde_yaml::Value::String(s)) => Some(s),
            Some(_) => return Err(format!("`{ORIGIN_KEY}` must be a string")),
            None => None,
        };
        let mut kept = serde_yaml::Mapping::new();
        for key in keep {
            if let Some(v) = map.shift_remove(*key) {
                kept.insert((*key).into(), v);
            }
        }
        Ok((
            PluginBlock {
                name,
                origin,
                settings: map,
            },
            kept,
        ))
    }

    /// The block's keys in the order a run records them: `name`, the settings, `plugin`.
    pub(crate) fn to_mapping(&self) -> serde_yaml::Mapping {
        let mut m = serde_yaml::Mapping::new();
        m.insert("name".into(), self.name.clone().into());
        for (k, v) in &self.settings {
            m.insert(k.clone(), v.clone());
        }
        if let Some(origin) = &self.origin {
            m.insert(ORIGIN_KEY.into(), origin.clone().into());
        }
        m
    }

    fn recorded<T: ?Sized>(self, kind: &dyn Kind<T>) -> PluginBlock {
        match kind.normalize(&self.settings) {
            Some(settings) => PluginBlock {
                name: self.name,
                origin: Some(self.origin.unwrap_or_else(|| kind.origin().to_string())),
                settings,
            },
            None => self,
        }
    }
}

/// The plugins a method uses, `"<kind> <name>" → "<crate> <version>"`, for its runs'
/// `platform.json` (empty for built-in methods).
pub fn plugins_of(method: &crate::train::Method) -> BTreeMap<String, String> {
    let mut used = BTreeMap::new();
    let mut note = |kind: &str, block: &PluginBlock| {
        used.insert(
            format!("{kind} {}", block.name),
            block.origin.clone().unwrap_or_default(),
        );
    };
    if let crate::optim::OptimizerSettings::Plugin { rule, .. } = &method.optimizer {
        note("optimizer", rule.block());
    }
    if let crate::strategy::StrategyConfig::Plugin(block) = method.strategy.config() {
        note("strategy", block);
    }
    used
}
