// Package enrich turns source rows into enriched rows: job specs (YAML
// files naming the source columns, the model and the typed output fields),
// their validation, the model backends, and the Arrow stage that assembles
// target rows.
//
// Each model provider (lexicon, openai, azure, noop) is one file holding
// its Provider: name, defaults, validation, key source and constructor.
// ModelProviders lists them; the spec loader and the command line read
// that list, so a new provider is a new file and one line there.
//
// What it promises:
//
//   - Every input row comes out with exactly one status: ok, skipped (blank
//     text, or a language the model does not read, with the reason in
//     _error; never sent to a model), failed or invalid_output (a model
//     answer that does not match the spec's enum or range). Rows are never
//     dropped. Enrich returns rows or an error, never part of them: an
//     exhausted budget, or, within a Chunk, a chunk of which the chat
//     model answered nothing because every request was throttled past its
//     attempts (*ThrottledError), gives no rows at all.
//   - A model takes only the rows of the languages it reads (see Language):
//     the lexicon reads English only; the chat providers every language
//     unless model.languages says otherwise.
//   - The API key never leaves the request header: every text a model
//     server sends back (answers, refusals, finish reasons, error bodies,
//     status lines, transport errors) is scrubbed of it, in every encoding
//     the scrubber knows, before anything reads it, so it reaches no row, no
//     log and no error; redirects are not followed.
//   - Texts longer than model.max_text_chars characters are cut to that many
//     characters (Unicode code points) before a model sees them.
//   - Enricher and the models are safe for concurrent use. Enricher.Enrich
//     returns a batch the caller owns and must Release; the key and carried
//     columns are shared with the input batch (retained, not copied).
//
// enrich knows nothing of queues or tables: it imports neither consumer nor
// storage.
package enrich
