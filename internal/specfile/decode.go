package specfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"reflect"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// DecodeYAML decodes the YAML document data, read from file, into v,
// strictly: a field v does not have is an error, as is an empty file, a
// second document (after ---, which yaml would ignore), a fraction where v
// holds an integer (yaml would cut 1.5 to 1) and NaN or an infinity where
// v holds a number. Any problem is a *FieldError naming file and, in its
// reason, the line: "line 3: unknown field tpye; line 5: cannot read "x"
// as a number"; the number checks name the field as well.
func DecodeYAML(file string, data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return &FieldError{File: file, Reason: "file is empty"}
		}
		// A number yaml cannot put in its field (NaN or a fraction in an
		// integer, an integer out of range) says so naming the field.
		if errs := numberErrors(file, data, v); errs != nil {
			return errs
		}
		return &FieldError{File: file, Reason: describeYAMLError(err)}
	}
	for {
		var next yaml.Node
		err := dec.Decode(&next)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return &FieldError{File: file, Reason: describeYAMLError(err)}
		}
		if !emptyDocument(&next) {
			return &FieldError{File: file, Reason: fmt.Sprintf("line %d: a second YAML document (after ---): a file holds one document (one config, or one job spec), the rest would be ignored", next.Line)}
		}
	}
	return numberErrors(file, data, v)
}

// numberErrors are the number problems of data's first document for v,
// each a *FieldError naming the field, joined; nil when there is none or
// data is not YAML.
func numberErrors(file string, data []byte, v any) error {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		return nil
	}
	var errs []error
	checkNumbers(&doc, reflect.TypeOf(v), "", func(field string, line int, reason string) {
		errs = append(errs, &FieldError{File: file, Field: field, Reason: fmt.Sprintf("line %d: %s", line, reason)})
	})
	return errors.Join(errs...)
}

// emptyDocument reports whether a document holds nothing (a trailing ---).
func emptyDocument(n *yaml.Node) bool {
	if n.Kind != yaml.DocumentNode {
		return false
	}
	for _, c := range n.Content {
		if c.Kind != yaml.ScalarNode || c.ShortTag() != "!!null" || c.Value != "" {
			return false
		}
	}
	return true
}

// checkNumbers walks the YAML node n alongside the Go type t it was
// decoded into and reports, through bad, what yaml.v3 lets through
// silently: a fraction decoded into an integer (truncated) and NaN or an
// infinity decoded into a float. path is the field's dotted path, as
// specs name fields: model.lexicon.neutral_band, outputs[1].min.
func checkNumbers(n *yaml.Node, t reflect.Type, path string, bad func(field string, line int, reason string)) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			checkNumbers(c, t, path, bad)
		}
		return
	case yaml.AliasNode:
		if n.Alias != nil {
			checkNumbers(n.Alias, t, path, bad)
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Value == "<<" && k.ShortTag() == "!!merge" {
				// A merge key: its mapping (or mappings) fill this struct.
				if val.Kind == yaml.SequenceNode {
					for _, m := range val.Content {
						checkNumbers(m, t, path, bad)
					}
				} else {
					checkNumbers(val, t, path, bad)
				}
				continue
			}
			if ft, ok := yamlField(t, k.Value); ok {
				checkNumbers(val, ft, join(path, k.Value), bad)
			}
		}
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i, c := range n.Content {
			checkNumbers(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), bad)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			checkNumbers(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), bad)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if n.Kind != yaml.ScalarNode || reflect.PointerTo(t).Implements(unmarshalerType) {
			return
		}
		if n.ShortTag() == "!!str" {
			bad(path, n.Line, fmt.Sprintf("%q is not a number (a quoted value, or one out of range)", n.Value))
			return
		}
		// The range [lo, hi) of t, exactly.
		lo, hi := new(big.Int), new(big.Int).Lsh(big.NewInt(1), uint(t.Bits()))
		if t.Kind() < reflect.Uint {
			hi.Rsh(hi, 1)
			lo.Neg(hi)
		}
		var v big.Int
		switch n.ShortTag() {
		case "!!float":
			var x float64
			if n.Decode(&x) != nil {
				return
			}
			if math.IsNaN(x) || math.IsInf(x, 0) || x != math.Trunc(x) {
				bad(path, n.Line, fmt.Sprintf("%s is not an integer", n.Value))
				return
			}
			big.NewFloat(x).Int(&v)
		case "!!int":
			if _, ok := v.SetString(strings.TrimPrefix(strings.ReplaceAll(n.Value, "_", ""), "+"), 0); !ok {
				return // yaml says what is wrong
			}
		default:
			return
		}
		if v.Cmp(lo) < 0 || v.Cmp(hi) >= 0 {
			bad(path, n.Line, fmt.Sprintf("%s is out of range", n.Value))
		}
	case reflect.Float32, reflect.Float64:
		if n.Kind != yaml.ScalarNode {
			return
		}
		if n.ShortTag() == "!!str" {
			bad(path, n.Line, fmt.Sprintf("%q is not a number (a quoted value, or one out of range)", n.Value))
			return
		}
		if n.ShortTag() != "!!float" {
			return
		}
		var x float64
		if n.Decode(&x) == nil && (math.IsNaN(x) || math.IsInf(x, 0)) {
			bad(path, n.Line, fmt.Sprintf("%s is not a finite number", n.Value))
		}
	}
}

// unmarshalerType is yaml.Unmarshaler: a type that reads its own YAML
// (BatchMode takes "auto") is not checked as a number.
var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// yamlField returns the type of t's field that YAML calls name, looking
// into inlined structs.
func yamlField(t reflect.Type, name string) (reflect.Type, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "-" {
			continue
		}
		if strings.Contains(","+opts+",", ",inline,") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if got, ok := yamlField(ft, name); ok {
					return got, true
				}
			}
			continue
		}
		if tag == "" {
			tag = strings.ToLower(f.Name)
		}
		if tag == name {
			return f.Type, true
		}
	}
	return nil, false
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

var unknownField = regexp.MustCompile(`field (\S+) not found in type \S+`)

// describeYAMLError turns a YAML decoding error into a short reason.
func describeYAMLError(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		parts := make([]string, len(te.Errors))
		for i, e := range te.Errors {
			e = unknownField.ReplaceAllString(e, "unknown field $1")
			parts[i] = strings.Replace(e, "cannot unmarshal", "cannot read", 1)
		}
		return strings.Join(parts, "; ")
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}
