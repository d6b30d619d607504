//! Pruning primitives on an f32 [`Network`]; the pipeline that chooses how much to
//! prune (and fine-tunes afterwards) is `train::compress`.
//!
//! - **Magnitude pruning** sets every weight with |w| < ε to zero and returns the
//!   masks (1 = kept, 0 = pruned). ε is the quantile of |w| over all weights (global)
//!   or over each layer's (per layer) that reaches a target sparsity. Biases are
//!   never pruned.
//! - **Neuron pruning** removes hidden units and shrinks the layers. A unit's
//!   importance is its mean |activation| over held-out rows times the L2 norm of its
//!   outgoing weights: how much it can move the next layer's input on typical data.
//!   A network's hidden activations carry over. With tanh or sigmoid a unit's
//!   output is rarely 0, so removing one also shifts the next layer's input by its
//!   typical contribution; the fine-tune that follows in `train::compress` absorbs it.

use ndarray::{Array1, Array2, ArrayView2, Axis};

use super::network::{Dense, Network, NetworkError};

/// Per-layer masks: 1.0 where the weight is kept, 0.0 where it is pruned.
pub type Masks = Vec<Array2<f32>>;

/// The |w| below which `sparsity` of the weights lie, over all layers (`global`)
/// or for each layer separately.
pub fn thresholds(net: &Network, sparsity: f64, global: bool) -> Vec<f32> {
    let quantile = |mut v: Vec<f32>| -> f32 {
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(f32::total_cmp);
        let k = ((v.len() as f64 * sparsity.clamp(0.0, 1.0)).floor() as usize).min(v.len());
        if k == 0 {
            0.0
        } else if k == v.len() {
            f32::INFINITY
        } else {
            v[k]
        }
    };
    let layers = net.layers();
    if global {
        let all: Vec<f32> = layers
            .iter()
            .flat_map(|l| l.weight.iter().map(|w| w.abs()))
            .collect();
        vec![quantile(all); layers.len()]
    } else {
        layers
            .iter()
            .map(|l| quantile(l.weight.iter().map(|w| w.abs()).collect()))
            .collect()
    }
}

/// Zeroes the weights below each layer's threshold and returns the masks. Weights
/// already zero stay zero and are masked.
pub fn prune_magnitude(net: &mut Network, thresholds: &[f32]) -> Masks {
    net.layers_mut()
        .iter_mut()
        .zip(thresholds)
        .map(|(l, &eps)| {
            let mask = l
                .weight
                .mapv(|w| f32::from(u8::from(w.abs() >= eps && w != 0.0)));
            l.weight.zip_mut_with(&mask, |w, m| *w *= m);
            mask
        })
        .collect()
}

/// The share of weights that are exactly zero.
pub fn sparsity(net: &Network) -> f64 {
    let (zeros, total) = net.layers().iter().fold((0usize, 0usize), |(z, t), l| {
        (
            z + l.weight.iter().filter(|w| **w == 0.0).count(),
            t + l.weight.len(),
        )
    });
    if total == 0 {
        0.0
    } else {
        zeros as f64 / total as f64
    }
}

/// The importance of every hidden unit, one vector per hidden layer.
pub fn neuron_importance(net: &Network, x: ArrayView2<f32>) -> Vec<Vec<f32>> {
    let (_, acts) = net.forward_batch_trace(x);
    let layers = net.layers();
    // acts[l] is the input of layer l, so acts[l + 1] holds hidden layer l's output.
    (0..layers.len().saturating_sub(1))
        .map(|l| {
            let mean_abs: Array1<f32> = acts[l + 1]
                .mapv(f32::abs)
                .mean_axis(Axis(0))
                .unwrap_or_else(|| Array1::zeros(layers[l].outputs()));
            let next = &layers[l + 1].weight;
            (0..layers[l].outputs())
                .map(|k| {
                    let norm = next.column(k).iter().map(|w| w * w).sum::<f32>().sqrt();
                    mean_abs[k] * norm
                })
                .collect()
        })
        .collect()
}

/// The network with only the hidden units `keep[l]` of each hidden layer `l`
/// (indices in ascending order): the layers shrink; each keeps its activation.
pub fn keep_neurons(net: &Network, keep: &[Vec<usize>]) -> Result<Network, NetworkError> {
    let layers = net.layers();
    let mut out: Vec<Dense> = layers.to_vec();
    for (l, units) in keep.iter().enumerate().take(layers.len().saturating_sub(1)) {
        out[l] = Dense {
            weight: out[l].weight.select(Axis(0), units),
            bias: out[l].bias.select(Axis(0), units),
        };
        out[l + 1] = Dense {
            weight: out[l + 1].weight.select(Axis(1), units),
            bias: out[l + 1].bias.clone(),
        };
    }
    Network::with_activations(out, net.activations().to_vec(), net.output())
}

/// The units to keep when dropping the `share` least important of each hidden layer
/// (at least one unit stays).
pub fn least_important_removed(importance: &[Vec<f32>], share: f64) -> Vec<Vec<usize>> {
    importance
        .iter()
        .map(|imp| {
            let n = imp.len();
            let drop = ((n as f64 * share).floor() as usize).min(n.saturating_sub(1));
            let mut order: Vec<usize> = (0..n).collect();
            // Least important first; ties by index so the result is deterministic.
            order.sort_by(|&a, &b| imp[a].total_cmp(&imp[b]).then(a.cmp(&b)));
            let mut keep: Vec<usize> = order[drop..].to_vec();
            keep.sort_unstable();
            keep
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::network::Output;
    use ndarray::array;

    fn net() -> Network {
        Network::new(
            vec![
                Dense {
                    weight: array![[0.1, -2.0], [0.5, 0.05], [1.0, -0.3]],
                    bias: array![0.0, 0.1, 0.2],
                },
                Dense {
                    weight: array![[1.0, 0.0, -0.5]],
                    bias: array![0.3],
                },
            ],
            Output::Identity,
        )
        .unwrap()
    }

    #[test]
    fn magnitude_pruning_reaches_the_target_and_masks_match() {
        let mut n = net();
        // |w| sorted: 0, 0.05, 0.1, 0.3, 0.5, 0.5, 1, 1, 2 — half is 4 of 9.
        let t = thresholds(&n, 0.5, true);
        assert_eq!(t, vec![0.5, 0.5]);
        let masks = prune_magnitude(&mut n, &t);
        assert_eq!(masks[0], array![[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]);
        assert_eq!(masks[1], array![[1.0, 0.0, 1.0]]);
        assert!((sparsity(&n) - 4.0 / 9.0).abs() < 1e-12);
        assert_eq!(
            n.layers()[0].bias,
            array![0.0, 0.1, 0.2],
            "biases untouched"
        );
    }

    #[test]
    fn neuron_pruning_drops_the_unit_that_cannot_matter_and_keeps_outputs() {
        let n = net();
        let x = array![[1.0f32, -1.0], [0.5, 0.2], [-0.3, -0.8]];
        let imp = neuron_importance(&n, x.view());
        // Unit 1 has a zero outgoing weight: importance 0.
        assert_eq!(imp[0][1], 0.0);
        let keep = least_important_removed(&imp, 0.34);
        assert_eq!(keep, vec![vec![0, 2]]);
        let small = keep_neurons(&n, &keep).unwrap();
        assert_eq!(small.layers()[0].weight.dim(), (2, 2));
        assert_eq!(small.layers()[1].weight.dim(), (1, 2));
        assert_eq!(small.forward_batch(x.view()), n.forward_batch(x.view()));
    }

    #[test]
    fn neuron_pruning_keeps_each_layers_activation() {
        let layers: Vec<Dense> = [(2, 4), (4, 3), (3, 1)]
            .iter()
            .map(|&(i, o)| Dense {
                weight: Array2::from_shape_fn((o, i), |(j, k)| (j as f32 - k as f32) * 0.3),
                bias: Array1::zeros(o),
            })
            .collect();
        let activations = vec![
            crate::model::network::Activation::Tanh,
            crate::model::network::Activation::LeakyRelu { alpha: 0.05 },
        ];
        let n = Network::with_activations(layers, activations.clone(), Output::Identity).unwrap();
        let small = keep_neurons(&n, &[vec![0, 2], vec![1, 2]]).unwrap();
        assert_eq!(small.activations(), activations.as_slice());
        assert_eq!(small.layers()[1].weight.dim(), (2, 2));
    }
}
