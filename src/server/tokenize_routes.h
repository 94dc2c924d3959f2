// POST /tokenize and POST /detokenize, in llama.cpp server's shape:
//   /tokenize   {content, add_special = false, parse_special = true, with_pieces = false, model?}
//               -> {tokens: [id...]} or, with_pieces, {tokens: [{id, piece}...]} where piece is
//               the token's text, or its bytes as an array of numbers when not valid UTF-8;
//   /detokenize {tokens: [id...], model?} -> {content}.
// The tokenizer is the chat model's, or the named encoder model's (the only one when the server
// runs no chat model). Unknown fields and ids outside the vocabulary are refused by name.
#pragma once

#include "server/server_state.h"

namespace httplib {
class Server;
}

namespace kvrag::server {

void add_tokenize_routes(httplib::Server& http, ServerState& state);

}  // namespace kvrag::server
