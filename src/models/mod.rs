//! Models: an MLP and a small CNN for 28×28 images, with one shared output layer or one head
//! per task.
//!
//! The model block of a config ([`ModelConfig`]) is checked into a [`ModelSpec`], which
//! [`Network::new`] builds. A [`Network`] owns its parameters as candle `Var`s and describes its
//! layers, so that gradients can come from candle's autograd ([`Network::forward`], the
//! reference), from the explicit MLP backward on tensors ([`mlp`]), or from the fused CPU step
//! of [`crate::engine::fused`] (the fast path); the tests hold all three to the same gradients.

pub mod init;
pub mod loss;
pub mod mlp;
pub mod pool;

use candle_core::{DType, Device, Result, Tensor, Var, D};
use serde::{Deserialize, Serialize};

use crate::data::IMAGE_SIDE;
use crate::optim::grapes;
use crate::rng::SeedRng;
use crate::streams::OutputLayout;
use crate::validate::{only_for, positive, Checked, KeyError};

pub use init::Init;

/// Hidden-layer nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// max(0, x)
    #[default]
    Relu,
    /// tanh(x)
    Tanh,
    /// 1 / (1 + e^-x)
    Sigmoid,
}

impl Activation {
    /// Applies the nonlinearity.
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => candle_nn::ops::sigmoid(x),
        }
    }

    /// The derivative at the pre-activation `a`, expressed through the output `h = f(a)`.
    pub fn derivative_from_output(self, h: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Relu => h.gt(0f32)?.to_dtype(h.dtype()),
            Activation::Tanh => h.sqr()?.affine(-1.0, 1.0),
            Activation::Sigmoid => h.mul(&h.affine(-1.0, 1.0)?),
        }
    }
}

/// Which architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// Fully connected network on the flattened image.
    Mlp,
    /// `[conv k×k → act → max-pool 2] × 2`, then fully connected hidden layers, then the output.
    Cnn,
}

/// How initial weights are drawn, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitKind {
    /// See [`Init::KaimingUniform`].
    #[default]
    KaimingUniform,
    /// See [`Init::TorchDefault`].
    TorchDefault,
    /// See [`Init::XavierUniform`].
    XavierUniform,
    /// See [`Init::Normal`]; its standard deviation is `init_std`.
    Normal,
}

/// The model of an experiment, as written in its config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `mlp` or `cnn`.
    pub kind: ModelKind,
    /// Widths of the fully connected hidden layers (MLP: required, e.g. `[256, 256]`;
    /// CNN: default `[128]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<Vec<usize>>,
    /// Hidden nonlinearity: `relu` (default), `tanh` or `sigmoid`.
    #[serde(default)]
    pub activation: Activation,
    /// Whether layers have biases (default true).
    #[serde(default = "yes")]
    pub bias: bool,
    /// `kaiming-uniform` (default), `torch-default`, `xavier-uniform` or `normal`.
    #[serde(default)]
    pub init: InitKind,
    /// Standard deviation for `init: normal` (default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_std: Option<f64>,
    /// CNN: output channels of the two convolutions (default `[16, 32]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<[usize; 2]>,
    /// CNN: square kernel size, stride 1, no padding (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<usize>,
    /// Inverted dropout with this drop probability, in [0, 1), after every hidden activation
    /// while the model trains (each fully connected hidden layer's units; each convolution's
    /// feature maps, before their pooling; PyTorch's `nn.Dropout(p)` in train mode: kept units
    /// scaled by 1/(1 − p)); off when the model is evaluated and when strategies estimate
    /// importances. Default: none. Needs the fused CPU step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
}

fn yes() -> bool {
    true
}

/// The keys of a model block (for "did you mean" hints).
pub const MODEL_KEYS: &[&str] = &[
    "kind",
    "hidden",
    "activation",
    "bias",
    "init",
    "init_std",
    "channels",
    "kernel",
    "dropout",
];

impl ModelConfig {
    /// An MLP with the given hidden widths and defaults elsewhere.
    pub fn mlp(hidden: &[usize]) -> Self {
        ModelConfig {
            kind: ModelKind::Mlp,
            hidden: Some(hidden.to_vec()),
            activation: Activation::Relu,
            bias: true,
            init: InitKind::KaimingUniform,
            init_std: None,
            channels: None,
            kernel: None,
            dropout: None,
        }
    }

    /// Checks sizes and resolves defaults into a [`ModelSpec`]; an error names the key inside
    /// the model block.
    pub fn check(&self) -> Checked<ModelSpec> {
        let conv = match self.kind {
            ModelKind::Mlp => {
                if self.hidden.is_none() {
                    return Err(KeyError::new(
                        "hidden",
                        "an MLP needs its hidden widths, e.g. `hidden: [256, 256]`",
                    ));
                }
                only_for("channels", self.channels.is_some(), "`kind: cnn`")?;
                only_for("kernel", self.kernel.is_some(), "`kind: cnn`")?;
                None
            }
            ModelKind::Cnn => {
                let channels = self.channels.unwrap_or([16, 32]);
                if channels.contains(&0) {
                    return Err(KeyError::new(
                        "channels",
                        "channel counts must be at least 1",
                    ));
                }
                if channels.iter().any(|&c| c > 4096) {
                    return Err(KeyError::new(
                        "channels",
                        format!("channel counts must be at most 4096, got {channels:?}"),
                    ));
                }
                let kernel = self.kernel.unwrap_or(5);
                let side = conv_output_side(IMAGE_SIDE, kernel).ok_or_else(|| {
                    KeyError::new(
                        "kernel",
                        format!(
                            "kernel {kernel} does not fit two conv+pool stages on 28×28 images"
                        ),
                    )
                })?;
                Some(ConvSpec {
                    channels,
                    kernel,
                    side,
                })
            }
        };
        let hidden = match (&self.hidden, self.kind) {
            (Some(h), _) => h.clone(),
            (None, _) => vec![128],
        };
        if let Some(i) = hidden.iter().position(|&h| h == 0) {
            return Err(KeyError::new(
                "hidden",
                format!(
                    "hidden layer {} has size 0; sizes must be at least 1",
                    i + 1
                ),
            ));
        }
        if hidden.len() > MAX_HIDDEN_LAYERS {
            return Err(KeyError::new(
                "hidden",
                format!(
                    "{} hidden layers; at most {MAX_HIDDEN_LAYERS}",
                    hidden.len()
                ),
            ));
        }
        let input = conv.map_or(crate::data::IMAGE_PIXELS, |c| {
            c.channels[1] * c.side * c.side
        });
        // Weights of the fully connected layers (the heads counted as one 10-way layer).
        let weights = std::iter::once(input)
            .chain(hidden.iter().copied())
            .chain(std::iter::once(10))
            .collect::<Vec<_>>()
            .windows(2)
            .try_fold(0usize, |sum, w| sum.checked_add(w[0].checked_mul(w[1])?));
        match weights {
            Some(w) if w <= MAX_PARAMETERS => {}
            _ => {
                return Err(KeyError::new(
                    "hidden",
                    format!(
                        "layers of {hidden:?} hold more than {MAX_PARAMETERS} weights (with \
                         gradients and optimizer state, over 8 GB)"
                    ),
                ))
            }
        }
        only_for(
            "init_std",
            self.init_std.is_some() && self.init != InitKind::Normal,
            "`init: normal`",
        )?;
        let init = match self.init {
            InitKind::KaimingUniform => Init::KaimingUniform,
            InitKind::TorchDefault => Init::TorchDefault,
            InitKind::XavierUniform => Init::XavierUniform,
            InitKind::Normal => Init::Normal {
                std: positive("init_std", self.init_std.unwrap_or(0.01))?,
            },
        };
        let dropout = match self.dropout {
            None => None,
            Some(p) if (0.0..1.0).contains(&p) => Some(p as f32).filter(|&p| p > 0.0),
            Some(p) => {
                return Err(KeyError::new(
                    "dropout",
                    format!("expected a drop probability in [0, 1), got {p}"),
                ))
            }
        };
        Ok(ModelSpec {
            kind: self.kind,
            hidden,
            activation: self.activation,
            bias: self.bias,
            init,
            conv,
            input_side: IMAGE_SIDE,
            dropout,
        })
    }
}

/// The most hidden layers a model may have.
pub const MAX_HIDDEN_LAYERS: usize = 64;
/// The most weights a model may hold (500 million: 2 GB of `f32`, four times that with
/// gradients and optimizer state).
pub const MAX_PARAMETERS: usize = 500_000_000;

/// The convolutional stages of a CNN, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    /// Output channels of the two convolutions.
    pub channels: [usize; 2],
    /// Square kernel size (stride 1, no padding).
    pub kernel: usize,
    /// Side of the feature maps after both conv + pool stages (at least 1).
    pub side: usize,
}

/// A validated model: what [`Network::new`] builds. Made by [`ModelConfig::check`] or
/// [`ModelSpec::mlp`]; the `with_*` methods change settings that are valid in any combination.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    kind: ModelKind,
    hidden: Vec<usize>,
    activation: Activation,
    bias: bool,
    init: Init,
    conv: Option<ConvSpec>,
    /// Side of the square single-channel input images (28, or more for a padded stream).
    input_side: usize,
    /// Training-time drop probability of the hidden units (`None`: no dropout; 0 is stored as
    /// `None`).
    dropout: Option<f32>,
}

impl ModelSpec {
    /// An MLP with these hidden widths (each ≥ 1), ReLU, biases and Kaiming-uniform weights.
    ///
    /// # Panics
    /// If a width is 0.
    pub fn mlp(hidden: &[usize]) -> ModelSpec {
        ModelConfig::mlp(hidden)
            .check()
            .unwrap_or_else(|e| panic!("ModelSpec::mlp({hidden:?}): {e}"))
    }

    /// The same model with or without biases.
    pub fn with_bias(mut self, bias: bool) -> ModelSpec {
        self.bias = bias;
        self
    }

    /// The same model with another hidden nonlinearity.
    pub fn with_activation(mut self, activation: Activation) -> ModelSpec {
        self.activation = activation;
        self
    }

    /// The same model with another weight initialization.
    pub fn with_init(mut self, init: Init) -> ModelSpec {
        self.init = init;
        self
    }

    /// The same model with training-time dropout of probability `p` after every hidden
    /// activation (`None` or 0: none).
    ///
    /// # Panics
    /// If `p` is not in [0, 1).
    pub fn with_dropout(mut self, p: Option<f32>) -> ModelSpec {
        assert!(p.is_none_or(|p| (0.0..1.0).contains(&p)), "dropout {p:?}");
        self.dropout = p.filter(|&p| p > 0.0);
        self
    }

    /// The training-time drop probability of the hidden units, if any.
    pub fn dropout(&self) -> Option<f32> {
        self.dropout
    }

    /// The same model for square input images of side `side` (a stream's
    /// [`crate::streams::TaskStream::image_side`]: 28, more when the stream pads its images).
    /// A CNN's feature maps grow with the input; its kernel fits any side at least 28 that
    /// fits 28 (checked by [`ModelConfig::check`]).
    ///
    /// # Panics
    /// If `side` is smaller than 28.
    pub fn for_input_side(mut self, side: usize) -> ModelSpec {
        assert!(side >= IMAGE_SIDE, "input side {side} below {IMAGE_SIDE}");
        if let Some(conv) = &mut self.conv {
            conv.side =
                conv_output_side(side, conv.kernel).expect("a kernel that fits 28 fits more");
        }
        self.input_side = side;
        self
    }

    /// Side of the square input images.
    pub fn input_side(&self) -> usize {
        self.input_side
    }

    /// Pixels of one input image (`input_side²`).
    pub fn input_pixels(&self) -> usize {
        self.input_side * self.input_side
    }

    /// MLP or CNN.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// Widths of the fully connected hidden layers.
    pub fn hidden(&self) -> &[usize] {
        &self.hidden
    }

    /// The hidden nonlinearity.
    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// Whether layers have biases.
    pub fn bias(&self) -> bool {
        self.bias
    }

    /// The weight initialization.
    pub fn init(&self) -> Init {
        self.init
    }

    /// The convolutional stages (CNN only).
    pub fn conv(&self) -> Option<ConvSpec> {
        self.conv
    }
}

/// Side length after two `conv(k) → pool(2)` stages on a `side`×`side` image, if positive.
fn conv_output_side(side: usize, kernel: usize) -> Option<usize> {
    let s1 = side.checked_sub(kernel - 1)? / 2;
    let s2 = s1.checked_sub(kernel - 1)? / 2;
    (s2 > 0).then_some(s2)
}

/// What a layer computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// `x Wᵀ + b` with `W: [out, in]`.
    Linear,
    /// 2-D convolution with `W: [out, in, k, k]`, stride 1, no padding, followed (for hidden
    /// layers) by the activation and a 2×2 max-pool.
    Conv,
}

/// One layer: where its parameters are in [`Network::params`].
#[derive(Debug, Clone)]
pub struct Layer {
    /// Name used in diagnostics (`hidden1`, `conv2`, `head3`…).
    pub name: String,
    /// Linear or convolution.
    pub kind: LayerKind,
    /// Index of the weight in `params`.
    pub weight: usize,
    /// Index of the bias in `params`, if any.
    pub bias: Option<usize>,
}

/// A model: parameters plus the layer structure that reads them.
#[derive(Debug, Clone)]
pub struct Network {
    /// The model it was built from.
    pub spec: ModelSpec,
    /// All trainable parameters.
    pub params: Vec<Var>,
    /// The hidden layers (the ones GRAPES modulates), input first.
    pub hidden: Vec<Layer>,
    /// The output heads (one per task for multi-head task-incremental streams).
    pub heads: Vec<Layer>,
    /// The hidden nonlinearity.
    pub activation: Activation,
}

impl Network {
    /// Builds a network for the spec's single-channel inputs (28×28 unless
    /// [`ModelSpec::for_input_side`] says otherwise) and the given outputs, drawing every
    /// initial weight from `rng`.
    pub fn new(
        spec: &ModelSpec,
        outputs: &OutputLayout,
        rng: &mut SeedRng,
        device: &Device,
    ) -> Result<Network> {
        let mut params = Vec::new();
        let mut push = |shape: Vec<usize>, values: Vec<f32>| -> Result<usize> {
            params.push(Var::from_tensor(&Tensor::from_vec(values, shape, device)?)?);
            Ok(params.len() - 1)
        };
        let (activation, bias, init) = (spec.activation, spec.bias, spec.init);
        let mut layer = |name: String,
                         kind: LayerKind,
                         shape: Vec<usize>,
                         rng: &mut SeedRng|
         -> Result<Layer> {
            let fan_out = shape[0];
            let fan_in: usize = shape[1..].iter().product();
            let n = fan_out * fan_in;
            // Receptive-field size counts towards fan_out for convolutions, as in PyTorch.
            let fan_out_full = fan_out * shape[2..].iter().product::<usize>();
            let weight = push(shape, init.sample(rng, fan_in, fan_out_full, n))?;
            let bias = if bias {
                Some(push(
                    vec![fan_out],
                    Init::sample_bias(rng, fan_in, fan_out),
                )?)
            } else {
                None
            };
            Ok(Layer {
                name,
                kind,
                weight,
                bias,
            })
        };
        let mut hidden = Vec::new();
        let mut width = spec.input_pixels();
        if let Some(ConvSpec {
            channels,
            kernel: k,
            side,
        }) = spec.conv
        {
            {
                hidden.push(layer(
                    "conv1".into(),
                    LayerKind::Conv,
                    vec![channels[0], 1, k, k],
                    rng,
                )?);
                hidden.push(layer(
                    "conv2".into(),
                    LayerKind::Conv,
                    vec![channels[1], channels[0], k, k],
                    rng,
                )?);
                width = channels[1] * side * side;
            }
        }
        for (i, &h) in spec.hidden.iter().enumerate() {
            hidden.push(layer(
                format!("hidden{}", i + 1),
                LayerKind::Linear,
                vec![h, width],
                rng,
            )?);
            width = h;
        }
        let heads = (0..outputs.heads())
            .map(|h| {
                let name = if outputs.heads() == 1 {
                    "output".to_string()
                } else {
                    format!("head{}", h + 1)
                };
                layer(
                    name,
                    LayerKind::Linear,
                    vec![outputs.head_size(h), width],
                    rng,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Network {
            spec: spec.clone(),
            params,
            hidden,
            heads,
            activation,
        })
    }

    /// Whether every hidden layer is fully connected (the explicit backward applies).
    pub fn is_mlp(&self) -> bool {
        self.hidden.iter().all(|l| l.kind == LayerKind::Linear)
    }

    /// The parameters as tensors that autograd tracks.
    pub fn tracked(&self) -> Vec<Tensor> {
        self.params.iter().map(|v| v.as_tensor().clone()).collect()
    }

    /// The parameters as plain tensors (no graph is recorded; they see later updates).
    pub fn detached(&self) -> Vec<Tensor> {
        self.params.iter().map(|v| v.as_tensor().detach()).collect()
    }

    /// The GRAPES factors of every hidden layer, from the current weights.
    pub fn grapes_factors(&self) -> Result<Vec<Tensor>> {
        self.hidden
            .iter()
            .map(|l| grapes::modulation_factors(self.params[l.weight].as_tensor()))
            .collect()
    }

    /// Number of trainable scalars.
    pub fn num_parameters(&self) -> usize {
        self.params.iter().map(|v| v.elem_count()).sum()
    }

    /// Logits of head `head` for a batch `x: [batch, 784]`, reading parameters from `p` (either
    /// [`Self::tracked`] or [`Self::detached`]). With `factors`, each hidden layer's output carries
    /// the propagating-GRAPES gradient scaling.
    pub fn forward(
        &self,
        p: &[Tensor],
        x: &Tensor,
        head: usize,
        factors: Option<&[Tensor]>,
    ) -> Result<Tensor> {
        let batch = x.dim(0)?;
        let mut h = x.clone();
        for (i, layer) in self.hidden.iter().enumerate() {
            let a = match layer.kind {
                LayerKind::Linear => {
                    if h.rank() > 2 {
                        h = h.flatten_from(1)?;
                    }
                    linear(&h, &p[layer.weight], layer.bias.map(|b| &p[b]))?
                }
                LayerKind::Conv => {
                    if h.rank() == 2 {
                        let side = self.spec.input_side();
                        h = h.reshape((batch, 1, side, side))?;
                    }
                    let mut a = h.conv2d(&p[layer.weight], 0, 1, 1, 1)?;
                    if let Some(b) = layer.bias {
                        a = a.broadcast_add(&p[b].reshape((1, (), 1, 1))?)?;
                    }
                    a
                }
            };
            h = self.activation.apply(&a)?;
            if let Some(f) = factors {
                h = grapes::scale_gradient(&h, &f[i])?;
            }
            if layer.kind == LayerKind::Conv {
                h = pool::max_pool_2x2(&h)?;
            }
        }
        if h.rank() > 2 {
            h = h.flatten_from(1)?;
        }
        let out = &self.heads[head];
        linear(&h, &p[out.weight], out.bias.map(|b| &p[b]))
    }
}

/// `x Wᵀ (+ b)`.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let y = x.matmul(&w.t()?)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// Mean cross-entropy of `logits` against one-hot `targets`, with an optional additive logit
/// mask (0 for allowed outputs, −∞-like for masked ones). Returns (loss, log-probabilities).
pub fn cross_entropy(
    logits: &Tensor,
    onehot: &Tensor,
    mask: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let z = match mask {
        Some(m) => logits.broadcast_add(m)?,
        None => logits.clone(),
    };
    let logp = candle_nn::ops::log_softmax(&z, D::Minus1)?;
    let batch = logits.dim(0)? as f64;
    let loss = (logp.mul(onehot)?.sum_all()? * (-1.0 / batch))?;
    Ok((loss, logp))
}

/// One-hot rows for `targets` over `classes` outputs.
pub fn one_hot(targets: &[u32], classes: usize, device: &Device) -> Result<Tensor> {
    let mut v = vec![0f32; targets.len() * classes];
    for (i, &t) in targets.iter().enumerate() {
        v[i * classes + t as usize] = 1.0;
    }
    Tensor::from_vec(v, (targets.len(), classes), device)
}

/// The additive mask that restricts a shared output layer of `outputs` units to `range`.
pub fn logit_mask(
    range: &std::ops::Range<usize>,
    outputs: usize,
    device: &Device,
) -> Result<Tensor> {
    let v: Vec<f32> = (0..outputs)
        .map(|i| if range.contains(&i) { 0.0 } else { -1e30 })
        .collect();
    Tensor::from_vec(v, (1, outputs), device)
}

/// The default dtype of every model.
pub const DTYPE: DType = DType::F32;
