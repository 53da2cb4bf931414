//! Parameter names: burn's module paths turned into timm's (`layer1.0.bn1.weight`), the one
//! naming that weights files, optimizer moments and gradient checks share.

/// Tracks the module path during a visit and turns burn's field names into timm's.
#[derive(Debug, Default, Clone)]
pub struct ParamNamer {
    path: Vec<(String, String)>,
}

impl ParamNamer {
    pub fn enter(&mut self, name: &str, container_type: &str) {
        self.path.push((name.to_string(), container_type.to_string()));
    }

    pub fn exit(&mut self) {
        self.path.pop();
    }

    /// Whether the current parameter is a linear weight stored `[in, out]` by burn.
    pub fn is_linear_weight(&self) -> bool {
        matches!(self.path.last(), Some((n, c)) if n == "weight" && c == "Struct:Linear")
    }

    /// timm name of the current parameter.
    pub fn param_name(&self) -> String {
        let parts: Vec<&str> = self
            .path
            .iter()
            .map(|(name, container)| match (name.as_str(), container.as_str()) {
                ("gamma", "Struct:BatchNorm" | "Struct:LayerNorm") => "weight",
                ("beta", "Struct:BatchNorm" | "Struct:LayerNorm") => "bias",
                ("conv", "Struct:Downsample") => "0",
                ("bn", "Struct:Downsample") => "1",
                (n, _) => n,
            })
            .collect();
        parts.join(".")
    }
}
