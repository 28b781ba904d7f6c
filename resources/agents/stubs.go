package agents

import "github.com/hamirror/hamirror/resources"

func newSystemd(name string, p *params, env Env) (resources.Agent, error)    { return nil, nil }
