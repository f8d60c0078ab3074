package enrich

import "cmp"

// ProviderOpenAI is any server speaking the OpenAI chat-completions API
// (api.openai.com, vLLM, llama.cpp, Ollama, ...).
const ProviderOpenAI = "openai"

// Defaults of provider openai.
const (
	DefaultOpenAIBaseURL = "https://api.openai.com/v1"
	DefaultOpenAIModel   = "gpt-4o-mini"
)

// openAIProvider asks a chat server with a bearer token, when there is one:
// local servers take none.
func openAIProvider() Provider {
	return Provider{
		Name: ProviderOpenAI,
		Chat: true,
		Defaults: func(m *ModelSettings) {
			m.BaseURL = cmp.Or(m.BaseURL, DefaultOpenAIBaseURL)
			m.Name = cmp.Or(m.Name, DefaultOpenAIModel)
		},
		Key: KeySource{Env: "OPENAI_API_KEY"},
		New: newChatModel,
	}
}
