package agents

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ocfMetadata is what hamirror reads of an OCF agent's meta-data (OCF
// resource agent API 1.1, ra-api.rng): the parameters with their types
// and the actions.
type ocfMetadata struct {
	XMLName    xml.Name       `xml:"resource-agent"`
	Name       string         `xml:"name,attr"`
	Parameters []ocfParameter `xml:"parameters>parameter"`
	Actions    []ocfAction    `xml:"actions>action"`
}

type ocfParameter struct {
	Name     string     `xml:"name,attr"`
	Required string     `xml:"required,attr"`
	Content  ocfContent `xml:"content"`
}

type ocfContent struct {
	Type    string      `xml:"type,attr"`
	Default string      `xml:"default,attr"`
	Options []ocfOption `xml:"option"`
}

type ocfOption struct {
	Value string `xml:"value,attr"`
}

type ocfAction struct {
	Name string `xml:"name,attr"`
}

// maxMetadata bounds the meta-data document read (the largest agents in
// resource-agents print about 40 KiB).
const maxMetadata = 1 << 20

// parseOCFMetadata decodes an agent's meta-data output strictly enough
// to trust what check reads: one resource-agent root, named parameters
// and actions.
func parseOCFMetadata(b []byte) (*ocfMetadata, error) {
	if len(b) > maxMetadata {
		return nil, fmt.Errorf("meta-data is %d bytes, more than %d", len(b), maxMetadata)
	}
	var md ocfMetadata
	dec := xml.NewDecoder(bytes.NewReader(b))
	dec.Strict = true
	if err := dec.Decode(&md); err != nil {
		return nil, fmt.Errorf("meta-data is not a resource-agent XML document: %w", err)
	}
	seen := map[string]bool{}
	for i, prm := range md.Parameters {
		if !ocfParamName.MatchString(prm.Name) {
			return nil, fmt.Errorf("meta-data parameter %d has an invalid name %q", i, prm.Name)
		}
		if seen[prm.Name] {
			return nil, fmt.Errorf("meta-data names parameter %q twice", prm.Name)
		}
		seen[prm.Name] = true
		switch prm.Required {
		case "", "0", "1", "false", "true":
		default:
			return nil, fmt.Errorf("meta-data parameter %q: required=%q is neither 0 nor 1", prm.Name, prm.Required)
		}
	}
	for i, act := range md.Actions {
		if act.Name == "" {
			return nil, fmt.Errorf("meta-data action %d has no name", i)
		}
	}
	return &md, nil
}

// paramError is a check failure: param is ".name" ("" for the params map
// as a whole), msg what is wrong and what to do.
type paramError struct {
	param, msg string
}

func (e *paramError) Error() string { return "params" + e.param + ": " + e.msg }

// check compares the configured values against the meta-data.
func (md *ocfMetadata) check(vals map[string]string) *paramError {
	// An agent that lists its actions must have ours.
	var missing []string
	for _, want := range []string{"start", "stop", "monitor"} {
		if !slices.ContainsFunc(md.Actions, func(a ocfAction) bool { return a.Name == want }) {
			missing = append(missing, want)
		}
	}
	if len(md.Actions) > 0 && len(missing) > 0 {
		return &paramError{"", fmt.Sprintf("agent %s has no %s action: hamirror needs start, stop and monitor", md.Name, strings.Join(missing, ", "))}
	}
	byName := map[string]ocfParameter{}
	names := make([]string, 0, len(md.Parameters))
	for _, prm := range md.Parameters {
		byName[prm.Name] = prm
		names = append(names, prm.Name)
	}
	keys := make([]string, 0, len(vals))
	for k := range vals {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		prm, ok := byName[k]
		if !ok {
			return &paramError{"." + k, fmt.Sprintf("agent %s has no parameter %q (it has: %s)", md.Name, k, strings.Join(names, ", "))}
		}
		if err := prm.Content.checkValue(vals[k]); err != nil {
			return &paramError{"." + k, err.Error()}
		}
	}
	for _, prm := range md.Parameters {
		if _, ok := vals[prm.Name]; !ok && (prm.Required == "1" || prm.Required == "true") {
			return &paramError{"." + prm.Name, fmt.Sprintf("is required by agent %s", md.Name)}
		}
	}
	return nil
}

// checkValue checks v against the parameter's declared content type.
func (c ocfContent) checkValue(v string) error {
	switch c.Type {
	case "integer":
		if _, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err != nil {
			return fmt.Errorf("must be an integer, got %q", v)
		}
	case "boolean":
		switch strings.ToLower(v) {
		case "1", "0", "true", "false", "yes", "no", "on", "off":
		default:
			return fmt.Errorf("must be a boolean (true/false), got %q", v)
		}
	case "select":
		if len(c.Options) == 0 {
			return nil
		}
		var allowed []string
		for _, o := range c.Options {
			if o.Value == v {
				return nil
			}
			allowed = append(allowed, o.Value)
		}
		return fmt.Errorf("must be one of %s, got %q", strings.Join(allowed, ", "), v)
	}
	return nil
}
