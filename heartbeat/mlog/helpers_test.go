package mlog

import "encoding/json"

func jsonString(b []byte) (string, error) {
	out, err := json.Marshal(b)
	if err != nil {
		return "", err
	}
	return string(out[1 : len(out)-1]), nil
}
