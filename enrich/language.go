package enrich

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Language says which column of the source holds each row's language,
// and what happens to a row whose language is not given. Together with
// model.languages, the languages the model reads, it decides which rows
// the model may take:
//
//   - a row whose language (the column's value: an ISO 639 code such as en,
//     or a tag such as pt-BR, compared in lower case by its first part) is
//     not one of model.languages is written with status skipped and the
//     reason in _error ("language pt is not one the model reads (en)"),
//     never sent to the model;
//   - a row whose language is null or blank is taken (Unknown: take, the
//     default) or written skipped (Unknown: skip);
//   - without model.languages (the chat providers' default) every language
//     is taken.
//
// Without a column every row is taken, whatever model.languages says.
type Language struct {
	Column  string `yaml:"column"`
	Unknown string `yaml:"unknown"`
}

// What Language.Unknown may say.
const (
	UnknownLanguageTake = "take"
	UnknownLanguageSkip = "skip"
)

var languageCode = regexp.MustCompile(`^[a-z]{2,3}$`)

// validateLanguage checks source.language and model.languages.
func (s *Spec) validateLanguage(bad func(field, format string, args ...any)) {
	l := s.Source.Language
	switch {
	case l.Column == "" && l.Unknown != "":
		bad("source.language.column", "is required when source.language is given: the column holding each row's language")
	case l.Column != "" && l.Column == s.Source.Text:
		bad("source.language.column", "%q is source.text: name the column holding each row's language", l.Column)
	}
	if l.Column != "" && l.Unknown != UnknownLanguageTake && l.Unknown != UnknownLanguageSkip {
		bad("source.language.unknown", "%q is not one of %s, %s (what happens to a row whose language is null)", l.Unknown, UnknownLanguageTake, UnknownLanguageSkip)
	}
	for i, code := range s.Model.Languages {
		f := fmt.Sprintf("model.languages[%d]", i)
		switch {
		case !languageCode.MatchString(code):
			bad(f, "%q is not a language code such as en or pt (ISO 639, lower case)", code)
		case slices.Index(s.Model.Languages, code) != i:
			bad(f, "%q is listed twice", code)
		}
	}
	if len(s.Model.Languages) > 0 && !s.Model.languagesByDefault && l.Column == "" {
		bad("model.languages", "needs source.language.column: the column that says each row's language")
	}
}

// LanguageRule describes in words which rows the job's model takes, for
// validate's output.
func (s *Spec) LanguageRule() string {
	l, langs := s.Source.Language, s.Model.Languages
	switch {
	case len(langs) == 0 && l.Column == "":
		return "every row (any language)"
	case len(langs) == 0 && l.Unknown == UnknownLanguageSkip:
		return fmt.Sprintf("rows whose %s is set (any language); rows without one are written skipped", l.Column)
	case len(langs) == 0:
		return "every row (any language)"
	case l.Column == "":
		return fmt.Sprintf("every row: the model reads %s, but the spec names no source.language column to tell", strings.Join(langs, ", "))
	}
	unknown := "taken"
	if l.Unknown == UnknownLanguageSkip {
		unknown = "written skipped"
	}
	return fmt.Sprintf("rows whose %s is %s; other languages are written skipped, rows without a language %s",
		l.Column, strings.Join(langs, " or "), unknown)
}

// languageGate decides, row by row, whether the model may take a row.
type languageGate struct {
	column      string
	langs       []string // empty: every language
	skipUnknown bool
}

// newLanguageGate returns nil when the spec has no rule to apply.
func newLanguageGate(s *Spec) *languageGate {
	l := s.Source.Language
	if l.Column == "" || (len(s.Model.Languages) == 0 && l.Unknown != UnknownLanguageSkip) {
		return nil
	}
	return &languageGate{column: l.Column, langs: s.Model.Languages, skipUnknown: l.Unknown == UnknownLanguageSkip}
}

// refuse returns why the model may not take a row whose language column
// holds v (null: ok false), or "" when it may.
func (g *languageGate) refuse(v string, ok bool) string {
	code := strings.TrimSpace(v)
	if !ok || code == "" {
		if g.skipUnknown {
			return fmt.Sprintf("the row has no language (%s is null or blank) and source.language.unknown is skip", g.column)
		}
		return ""
	}
	if i := strings.IndexAny(code, "-_"); i > 0 {
		code = code[:i]
	}
	code = strings.ToLower(code)
	if len(g.langs) == 0 || slices.Contains(g.langs, code) {
		return ""
	}
	shown := code
	if !languageCode.MatchString(code) {
		short, _ := Truncate(strings.TrimSpace(v), 20)
		shown = strconv.Quote(short)
	}
	return fmt.Sprintf("language %s is not one the model reads (%s)", shown, strings.Join(g.langs, ", "))
}
