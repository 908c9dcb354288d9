//! `infernet:plugin/models@0.2.2` on the host's model registry: a plugin
//! opens only models granted to it; weights come back as tensor handles
//! (shared, not charged to its budget) and never cross into guest memory.
//! Every handle (model, tokenizer, weight) counts against `tensor_handles`.
//! The small text files beside the weights are read at open and handed out
//! by path (0.2.1). A GGUF model's tensors also come as stored, quantized
//! (`get-quantized`, 0.2.2).

use super::infernet::plugin::models as wit;
use super::{Error, Out};
use crate::kernels::{QMatrixRes, TensorRes};
use crate::models::{TokenizerRes, WeightsRes};
use crate::worlds::caps::ModelView;
use wasmtime::component::Resource;

impl wit::Host for ModelView<'_> {
    fn open(&mut self, model_id: String) -> Out<Resource<WeightsRes>> {
        let entry = match self.grants.open(self.plugin, &model_id) {
            Ok(entry) => entry,
            Err(e) => return Ok(Err(Error::Unsupported(e))),
        };
        if let Err(e) = self.kernels.take_handle() {
            return Ok(Err(e.into()));
        }
        Ok(Ok(self.table.push(WeightsRes(entry))?))
    }
}

impl wit::HostWeights for ModelView<'_> {
    fn id(&mut self, w: Resource<WeightsRes>) -> wasmtime::Result<String> {
        Ok(self.table.get(&w)?.0.id().to_string())
    }

    fn config(&mut self, w: Resource<WeightsRes>) -> wasmtime::Result<String> {
        Ok(self.table.get(&w)?.0.config_json().to_string())
    }

    fn names(&mut self, w: Resource<WeightsRes>) -> wasmtime::Result<Vec<String>> {
        Ok(self.table.get(&w)?.0.names().to_vec())
    }

    fn get(&mut self, w: Resource<WeightsRes>, name: String) -> Out<Resource<TensorRes>> {
        let entry = self.table.get(&w)?.0.clone();
        let adopted = entry
            .tensor(&name)
            .map_err(Error::InvalidInput)
            .and_then(|t| {
                self.kernels
                    .adopt_weight(t, entry.weights_hash(), &name)
                    .map_err(Error::from)
            });
        match adopted {
            Ok(res) => Ok(Ok(self.table.push(res)?)),
            Err(e) => Ok(Err(e)),
        }
    }

    fn get_quantized(
        &mut self,
        w: Resource<WeightsRes>,
        name: String,
    ) -> Out<Resource<QMatrixRes>> {
        let entry = self.table.get(&w)?.0.clone();
        let adopted = entry
            .qtensor(&name)
            .and_then(|q| match q.shape().dims() {
                [_, _] => Ok(q),
                dims => Err(format!(
                    "tensor `{name}` of model `{}` has shape {dims:?}, not a matrix: use `get`",
                    entry.id()
                )),
            })
            .map_err(Error::InvalidInput)
            .and_then(|q| {
                self.kernels
                    .adopt_qweight(q, entry.weights_hash(), &name)
                    .map_err(Error::from)
            });
        match adopted {
            Ok(res) => Ok(Ok(self.table.push(res)?)),
            Err(e) => Ok(Err(e)),
        }
    }

    fn format(&mut self, w: Resource<WeightsRes>) -> wasmtime::Result<String> {
        Ok(self.table.get(&w)?.0.format().into())
    }

    fn tokenizer(&mut self, w: Resource<WeightsRes>) -> Out<Resource<TokenizerRes>> {
        let entry = self.table.get(&w)?.0.clone();
        let t = match TokenizerRes::of(entry) {
            Ok(t) => t,
            Err(e) => return Ok(Err(Error::Unsupported(e))),
        };
        if let Err(e) = self.kernels.take_handle() {
            return Ok(Err(e.into()));
        }
        Ok(Ok(self.table.push(t)?))
    }

    fn files(&mut self, w: Resource<WeightsRes>) -> wasmtime::Result<Vec<String>> {
        Ok(self.table.get(&w)?.0.files().keys().cloned().collect())
    }

    fn file(&mut self, w: Resource<WeightsRes>, path: String) -> Out<String> {
        let entry = &self.table.get(&w)?.0;
        Ok(match entry.files().get(&path) {
            Some(text) => Ok(text.clone()),
            None => Err(Error::InvalidInput(format!(
                "model `{}` has no file `{}` the host offers (it has: {})",
                entry.id(),
                path.chars().take(200).collect::<String>(),
                entry.files().keys().cloned().collect::<Vec<_>>().join(", ")
            ))),
        })
    }

    fn drop(&mut self, w: Resource<WeightsRes>) -> wasmtime::Result<()> {
        self.table.delete(w)?;
        self.kernels.release_handle();
        Ok(())
    }
}

impl wit::HostTokenizer for ModelView<'_> {
    fn encode(
        &mut self,
        t: Resource<TokenizerRes>,
        text: String,
        add_special: bool,
    ) -> Out<Vec<u32>> {
        Ok(self
            .table
            .get(&t)?
            .encode(text, add_special)
            .map_err(Error::InvalidInput))
    }

    fn encode_truncated(
        &mut self,
        t: Resource<TokenizerRes>,
        text: String,
        add_special: bool,
        max_length: u32,
    ) -> Out<Vec<u32>> {
        Ok(self
            .table
            .get(&t)?
            .encode_truncated(text, add_special, max_length)
            .map_err(Error::InvalidInput))
    }

    fn decode(
        &mut self,
        t: Resource<TokenizerRes>,
        ids: Vec<u32>,
        skip_special: bool,
    ) -> Out<String> {
        Ok(self
            .table
            .get(&t)?
            .decode(&ids, skip_special)
            .map_err(Error::InvalidInput))
    }

    fn token_to_id(
        &mut self,
        t: Resource<TokenizerRes>,
        token: String,
    ) -> wasmtime::Result<Option<u32>> {
        Ok(self.table.get(&t)?.token_to_id(&token))
    }

    fn vocab_size(&mut self, t: Resource<TokenizerRes>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&t)?.vocab_size())
    }

    fn drop(&mut self, t: Resource<TokenizerRes>) -> wasmtime::Result<()> {
        self.table.delete(t)?;
        self.kernels.release_handle();
        Ok(())
    }
}
