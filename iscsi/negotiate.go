package iscsi

import (
	"fmt"
	"strconv"
)

// Params are the operational parameters in force on a connection after
// login (RFC 7143 section 13). The zero value is not valid; start from
// defaultParams, which holds the RFC defaults a target assumes for keys
// that were never negotiated.
type Params struct {
	HeaderDigest bool
	DataDigest   bool
	// MaxRecvDataSegmentLength is what we declared we accept.
	MaxRecvDataSegmentLength uint32
	// MaxSendDataSegmentLength is what the target declared it accepts.
	MaxSendDataSegmentLength uint32
	MaxBurstLength           uint32
	FirstBurstLength         uint32
	InitialR2T               bool
	ImmediateData            bool
	MaxOutstandingR2T        uint32
	ErrorRecoveryLevel       uint32
}

func defaultParams() Params {
	return Params{
		MaxRecvDataSegmentLength: 8192,
		MaxSendDataSegmentLength: 8192,
		MaxBurstLength:           262144,
		FirstBurstLength:         65536,
		InitialR2T:               true,
		ImmediateData:            true,
		MaxOutstandingR2T:        1,
	}
}

// negotiator is the pure operational-stage negotiation: offer() produces our
// proposals, apply() folds in the target's answers (and its own proposals,
// which it answers in the returned pairs) through RFC 7143's result
// functions. Answers outside the result function (a larger MaxBurstLength,
// ImmediateData=Yes after our No) are clamped to the result rather than
// refused, since acting on the stricter value is always safe for us;
// malformed values and choices that would break framing (a digest we did
// not offer, ErrorRecoveryLevel > 0) are errors.
type negotiator struct {
	want      Params // what we propose
	discovery bool
	got       Params
	offered   map[string]bool
}

func newNegotiator(want Params, discovery bool) *negotiator {
	return &negotiator{want: want, discovery: discovery, got: defaultParams(), offered: map[string]bool{}}
}

func yesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

func digestOffer(b bool) string {
	if b {
		return "CRC32C,None"
	}
	return "None"
}

func (n *negotiator) offer() []kv {
	w := n.want
	pairs := []kv{
		{"HeaderDigest", digestOffer(w.HeaderDigest)},
		{"DataDigest", digestOffer(w.DataDigest)},
		{"MaxRecvDataSegmentLength", strconv.FormatUint(uint64(w.MaxRecvDataSegmentLength), 10)},
	}
	if !n.discovery {
		pairs = append(pairs,
			kv{"MaxConnections", "1"},
			kv{"InitialR2T", yesNo(w.InitialR2T)},
			kv{"ImmediateData", yesNo(w.ImmediateData)},
			kv{"MaxBurstLength", strconv.FormatUint(uint64(w.MaxBurstLength), 10)},
			kv{"FirstBurstLength", strconv.FormatUint(uint64(w.FirstBurstLength), 10)},
			kv{"MaxOutstandingR2T", strconv.FormatUint(uint64(w.MaxOutstandingR2T), 10)},
			kv{"DefaultTime2Wait", "0"},
			kv{"DefaultTime2Retain", "0"},
			kv{"DataPDUInOrder", "Yes"},
			kv{"DataSequenceInOrder", "Yes"},
			kv{"ErrorRecoveryLevel", "0"},
		)
	}
	for _, p := range pairs {
		n.offered[p.Key] = true
	}
	n.got.MaxRecvDataSegmentLength = w.MaxRecvDataSegmentLength
	return pairs
}

func parseNum(key, v string, lo, hi uint64) (uint32, error) {
	x, err := strconv.ParseUint(v, 10, 32)
	if err != nil || x < lo || x > hi {
		return 0, fmt.Errorf("%w: %s=%.20q is not a number in [%d, %d]", ErrProtocol, key, v, lo, hi)
	}
	return uint32(x), nil
}

func parseBool(key, v string) (bool, error) {
	switch v {
	case "Yes":
		return true, nil
	case "No":
		return false, nil
	}
	return false, fmt.Errorf("%w: %s=%.20q is neither Yes nor No", ErrProtocol, key, v)
}

// apply folds the target's pairs into the result and returns our answers
// to keys the target proposed on its own.
func (n *negotiator) apply(pairs []kv) ([]kv, error) {
	var reply []kv
	for _, p := range pairs {
		if p.Value == "Reject" || p.Value == "Irrelevant" || p.Value == "NotUnderstood" {
			// Keep the RFC default (digests off, defaults for the rest).
			continue
		}
		offered := n.offered[p.Key]
		var err error
		switch p.Key {
		case "HeaderDigest", "DataDigest":
			var on bool
			switch p.Value {
			case "CRC32C":
				on = true
			case "None":
			default:
				if offered {
					return nil, fmt.Errorf("%w: %s=%.20q is not one of the offered values", ErrProtocol, p.Key, p.Value)
				}
				// The target offers a list: pick what we want from it.
				on = false
			}
			if on && !(p.Key == "HeaderDigest" && n.want.HeaderDigest || p.Key == "DataDigest" && n.want.DataDigest) {
				if offered {
					return nil, fmt.Errorf("%w: target chose %s=CRC32C, which we did not offer", ErrProtocol, p.Key)
				}
				on = false
			}
			if p.Key == "HeaderDigest" {
				n.got.HeaderDigest = on
			} else {
				n.got.DataDigest = on
			}
			if !offered {
				reply = append(reply, kv{p.Key, map[bool]string{true: "CRC32C", false: "None"}[on]})
			}
		case "MaxRecvDataSegmentLength":
			// Declarative: how much the target accepts in one PDU.
			n.got.MaxSendDataSegmentLength, err = parseNum(p.Key, p.Value, 512, maxDataSegment)
		case "MaxBurstLength", "FirstBurstLength":
			var v uint32
			if v, err = parseNum(p.Key, p.Value, 512, maxDataSegment); err != nil {
				break
			}
			mine := n.want.MaxBurstLength
			if p.Key == "FirstBurstLength" {
				mine = n.want.FirstBurstLength
			}
			// Result function: the minimum. A target answering above our
			// offer (gotgt does) is clamped; we never send more than we
			// offered, and accept R2Ts up to the write's size.
			v = min(v, mine)
			if p.Key == "MaxBurstLength" {
				n.got.MaxBurstLength = v
			} else {
				n.got.FirstBurstLength = v
			}
			if !offered {
				reply = append(reply, kv{p.Key, strconv.FormatUint(uint64(v), 10)})
			}
		case "MaxOutstandingR2T":
			var v uint32
			if v, err = parseNum(p.Key, p.Value, 1, 65535); err != nil {
				break
			}
			n.got.MaxOutstandingR2T = min(v, n.want.MaxOutstandingR2T)
			if !offered {
				reply = append(reply, kv{p.Key, strconv.FormatUint(uint64(n.got.MaxOutstandingR2T), 10)})
			}
		case "InitialR2T":
			var v bool
			if v, err = parseBool(p.Key, p.Value); err != nil {
				break
			}
			n.got.InitialR2T = v || n.want.InitialR2T
			if !offered {
				reply = append(reply, kv{p.Key, yesNo(n.got.InitialR2T)})
			}
		case "ImmediateData":
			var v bool
			if v, err = parseBool(p.Key, p.Value); err != nil {
				break
			}
			n.got.ImmediateData = v && n.want.ImmediateData
			if !offered {
				reply = append(reply, kv{p.Key, yesNo(n.got.ImmediateData)})
			}
		case "ErrorRecoveryLevel":
			var v uint32
			if v, err = parseNum(p.Key, p.Value, 0, 2); err != nil {
				break
			}
			if v != 0 && offered {
				return nil, fmt.Errorf("%w: ErrorRecoveryLevel=%d, we support only 0", ErrProtocol, v)
			}
			if !offered {
				reply = append(reply, kv{p.Key, "0"})
			}
		case "MaxConnections":
			if !offered {
				reply = append(reply, kv{p.Key, "1"})
			}
		case "DataPDUInOrder", "DataSequenceInOrder":
			var v bool
			if v, err = parseBool(p.Key, p.Value); err != nil {
				break
			}
			if !v && offered {
				return nil, fmt.Errorf("%w: %s=No, we need in-order data", ErrProtocol, p.Key)
			}
			if !offered {
				reply = append(reply, kv{p.Key, "Yes"})
			}
		case "DefaultTime2Wait", "DefaultTime2Retain":
			if _, err = parseNum(p.Key, p.Value, 0, 3600); err == nil && !offered {
				reply = append(reply, kv{p.Key, "0"})
			}
		case "TargetAlias", "TargetPortalGroupTag", "TargetAddress", "TargetName":
			// Informational.
		default:
			if !offered {
				reply = append(reply, kv{p.Key, "NotUnderstood"})
			}
		}
		if err != nil {
			return nil, err
		}
	}
	if n.got.FirstBurstLength > n.got.MaxBurstLength {
		n.got.FirstBurstLength = n.got.MaxBurstLength
	}
	return reply, nil
}

// result is the negotiated parameter set.
func (n *negotiator) result() Params { return n.got }
