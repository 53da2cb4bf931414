//! Exponential moving averages of a network's parameters: the teacher of self-distillation
//! methods (DINO's, and any method with a momentum encoder) follows its student this way.

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

use crate::params::ParamNamer;

/// A copy of `module` that shares no mutable state with it. burn's `Clone` shares BatchNorm's
/// running statistics (`RunningState` holds them behind an `Arc`), so a teacher cloned from the
/// student updated the student's statistics with its own forward pass and vice versa (caught by
/// `one_dino_step_matches_pytorch`); `valid()` rebuilds every running state from its value.
pub fn own_copy<M: Module>(module: &M) -> M {
    module.valid().train()
}

/// `teacher <- m teacher + (1 - m) student`, parameter by parameter (the two modules have the
/// same architecture, so they list their parameters in the same order). BatchNorm's running
/// statistics are buffers, not parameters: as DINO's EMA over `parameters()`, they are left
/// alone, and the teacher's come from its own train-mode forward passes.
pub fn ema<M: Module>(teacher: M, student: &M, momentum: f64) -> M {
    fn is_buffer(namer: &ParamNamer) -> bool {
        let name = namer.param_name();
        name.ends_with("running_mean") || name.ends_with("running_var")
    }
    struct Collect(ParamNamer, Vec<Tensor<1>>);
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.0.enter(name, container_type);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if !is_buffer(&self.0) {
                self.1.push(param.val().inner().reshape([-1]));
            }
        }
    }
    struct Blend {
        namer: ParamNamer,
        student: std::vec::IntoIter<Tensor<1>>,
        m: f64,
    }
    impl ModuleMapper for Blend {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.namer.enter(name, container_type);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.namer.exit();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if is_buffer(&self.namer) {
                return param;
            }
            let (id, tensor, mapper) = param.consume();
            let s = self
                .student
                .next()
                .expect("teacher and student have the same parameters");
            let shape = tensor.dims();
            let t = tensor.inner().reshape([-1]).mul_scalar(self.m) + s.mul_scalar(1.0 - self.m);
            Param::from_mapped_value(id, Tensor::from_inner(t.reshape(shape)), mapper)
        }
    }
    let mut collect = Collect(ParamNamer::default(), Vec::new());
    student.visit(&mut collect);
    teacher.map(&mut Blend {
        namer: ParamNamer::default(),
        student: collect.1.into_iter(),
        m: momentum,
    })
}
