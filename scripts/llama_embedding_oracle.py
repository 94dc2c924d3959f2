#!/usr/bin/env python3
"""Writes tests/data/embeddings/llama-embedding-q8_0-f16.json: the reference engine's
(llama.cpp's llama-embedding) L2-normalised embeddings of a few texts on two synthetic bert
models that `kvrag make-model` writes deterministically (Q8_0 and F16 weights, seed 7, the bge
WordPiece vocabulary from ../shared). tests/engine/embedder_reference_test.cpp remakes the models,
checks their sha256 against the ones recorded here and compares kvrag's vectors.

usage: scripts/llama_embedding_oracle.py KVRAG_BINARY LLAMA_BIN_DIR
(LLAMA_BIN_DIR: the bin folder of ../shared/tools/build-llama.sh's output.)
"""
import hashlib, json, os, subprocess, sys, tempfile

kvrag, llama_bin = sys.argv[1], sys.argv[2]
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
vocab = os.path.join(root, "..", "shared", "data", "vocab", "ggml-vocab-bert-bge.gguf")
# llama-embedding splits -p at newlines, so no text holds one.
texts = ["Hello world",
         "KV-cache OVERFLOW at 1024 tokens: NoKvSlot (error #42) in LLamaSharp v0.13.0",
         "The cache was full. The server rejected the request with a clear error. Then the operator raised the limit.",
         "Café déjà vu: naïve façade in Zürich — 東京 and Москва!"]
args = ["--arch", "bert", "--dim", "64", "--layers", "2", "--heads", "4", "--ff", "256", "--ctx", "512", "--seed", "7"]
env = dict(os.environ, LD_LIBRARY_PATH=llama_bin)
out = {"make_model_args": args, "vocab": "ggml-vocab-bert-bge.gguf", "texts": texts, "models": {}}
with tempfile.TemporaryDirectory() as tmp:
    for t in ["q8_0", "f16"]:
        m = os.path.join(tmp, f"sbert-{t}.gguf")
        subprocess.run([kvrag, "make-model", "-o", m, "--vocab-from", vocab, "--type", t] + args, check=True, capture_output=True)
        sha = hashlib.sha256(open(m, "rb").read()).hexdigest()
        vecs = []
        for txt in texts:
            r = subprocess.run([os.path.join(llama_bin, "llama-embedding"), "-m", m, "-fa", "off", "-c", "512", "-b", "512", "-ub", "512",
                                "-t", "2", "--embd-normalize", "2", "--embd-output-format", "json", "-p", txt],
                               capture_output=True, text=True, env=env, check=True)
            data = json.loads(r.stdout)["data"]
            assert len(data) == 1, txt
            vecs.append(data[0]["embedding"])
        out["models"][t] = {"sha256": sha, "embeddings": vecs}
path = os.path.join(root, "tests", "data", "embeddings", "llama-embedding-q8_0-f16.json")
with open(path, "w") as f:
    json.dump(out, f, ensure_ascii=False, indent=1)
print("wrote", path)
