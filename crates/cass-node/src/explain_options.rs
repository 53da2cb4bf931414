//! What `explain` computes, across the door: the method and its options, checked into the
//! engine's [`Method`].

use cass_core::CassError;
use cass_core::explain::{CamMethod, HeadFusion, Method};
use napi_derive::napi;

/// What `explain` computes.
#[napi(object)]
pub struct ExplainOptions {
    /// `gradcam`, `gradcam++`, `layercam` or `attention-rollout`.
    pub method: String,
    /// Per image, the class to explain; -1 (or none given) for the predicted one.
    pub targets: Option<Vec<i32>>,
    /// Rollout: `mean` (default), `max` or `min` over the heads.
    pub head_fusion: Option<String>,
    /// Rollout: share of the weakest attention links dropped per block, in [0, 1) (default 0).
    pub discard_ratio: Option<f64>,
    /// CNN class maps: the ResNet stage explained, 1 to 4 (default: the deepest whose grid is
    /// at least 4 x 4).
    pub stage: Option<u32>,
}

pub(crate) fn explain_method(o: &ExplainOptions) -> std::result::Result<Method, CassError> {
    let rollout_only =
        |field: &str| CassError::config(field, format!("applies to attention-rollout only, not {}", o.method));
    let cam = |m| {
        if o.head_fusion.is_some() {
            return Err(rollout_only("headFusion"));
        }
        if o.discard_ratio.is_some() {
            return Err(rollout_only("discardRatio"));
        }
        Ok(Method::Cam {
            method: m,
            stage: o.stage.map(|s| s as usize),
        })
    };
    match o.method.as_str() {
        "gradcam" => cam(CamMethod::GradCam),
        "gradcam++" => cam(CamMethod::GradCamPlusPlus),
        "layercam" => cam(CamMethod::LayerCam),
        "attention-rollout" => {
            if o.stage.is_some() {
                return Err(CassError::config(
                    "stage",
                    "applies to the CNN's class maps, not attention-rollout",
                ));
            }
            let fusion = match o.head_fusion.as_deref().unwrap_or("mean") {
                "mean" => HeadFusion::Mean,
                "max" => HeadFusion::Max,
                "min" => HeadFusion::Min,
                other => {
                    return Err(CassError::config(
                        "headFusion",
                        format!("expected mean, max or min, got {other:?}"),
                    ));
                }
            };
            let discard_ratio = o.discard_ratio.unwrap_or(0.0);
            if !(0.0..1.0).contains(&discard_ratio) {
                return Err(CassError::config(
                    "discardRatio",
                    format!("must be at least 0 and below 1, got {discard_ratio}"),
                ));
            }
            Ok(Method::Rollout { fusion, discard_ratio })
        }
        other => Err(CassError::config(
            "method",
            format!("expected gradcam, gradcam++, layercam or attention-rollout, got {other:?}"),
        )),
    }
}
