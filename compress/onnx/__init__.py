"""ONNX graph work: export with its parity gate, rewrites for ONNX Runtime, quantization bookkeeping, fp16."""
