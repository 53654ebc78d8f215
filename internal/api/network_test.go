package api

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

// The egress policy given at create reaches the agent and is shown on the
// sandbox; a bad one is refused before anything is reserved.
func TestCreateNetworkPolicy(t *testing.T) {
	e := newEnv(t, Config{})
	tests := []struct {
		name     string
		body     string
		status   int
		msg      string // in the error message
		wantPB   *pb.NetworkPolicy
		wantView *models.NetworkPolicy
	}{
		{name: "default allows all", body: `{}`, status: 201},
		{name: "deny all with an allowance", body: `{"network":{"egress":"deny_all","allow_cidrs":["198.51.100.0/24"]}}`, status: 201,
			wantPB:   &pb.NetworkPolicy{Egress: pb.NetworkPolicy_EGRESS_DENY_ALL, AllowCidrs: []string{"198.51.100.0/24"}},
			wantView: &models.NetworkPolicy{Egress: "deny_all", AllowCIDRs: []string{"198.51.100.0/24"}}},
		{name: "allow all with a denial", body: `{"network":{"deny_cidrs":["203.0.113.7/32"]}}`, status: 201,
			wantPB:   &pb.NetworkPolicy{Egress: pb.NetworkPolicy_EGRESS_ALLOW_ALL, DenyCidrs: []string{"203.0.113.7/32"}},
			wantView: &models.NetworkPolicy{DenyCIDRs: []string{"203.0.113.7/32"}}},
		{name: "unknown egress", body: `{"network":{"egress":"none"}}`, status: 400, msg: "network.egress"},
		{name: "host name", body: `{"network":{"allow_cidrs":["example.com"]}}`, status: 400, msg: "network.allow_cidrs"},
		{name: "ipv6", body: `{"network":{"deny_cidrs":["2001:db8::/32"]}}`, status: 400, msg: "IPv4"},
		{name: "unknown field", body: `{"network":{"egres":"deny_all"}}`, status: 400, msg: "egres"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := e.agent.created()
			usedBefore := e.used("alice")
			r := e.do("POST", "/v1/sandboxes", e.alice, tc.body)
			if r.status != tc.status {
				t.Fatalf("status %d %s, want %d", r.status, r.body, tc.status)
			}
			if tc.status != http.StatusCreated {
				if r.errCode() != CodeInvalidRequest || !strings.Contains(string(r.body), tc.msg) {
					t.Errorf("error %s, want invalid_request mentioning %q", r.body, tc.msg)
				}
				if n, _ := e.agent.created(); n != before || e.used("alice") != usedBefore {
					t.Errorf("a refused create reached the agent or the pool")
				}
				return
			}
			v := decode[SandboxView](t, r)
			_, last := e.agent.created()
			if got := last.GetNetwork(); !policyEqual(got, tc.wantPB) {
				t.Errorf("agent got %v, want %v", got, tc.wantPB)
			}
			got := decode[SandboxView](t, e.do("GET", "/v1/sandboxes/"+v.ID, e.alice, nil))
			for _, view := range []SandboxView{v, got} {
				if !viewPolicyEqual(view.Network, tc.wantView) {
					t.Errorf("view network %+v, want %+v", view.Network, tc.wantView)
				}
			}
		})
	}
}

func policyEqual(a, b *pb.NetworkPolicy) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.GetEgress() == b.GetEgress() && slices.Equal(a.GetAllowCidrs(), b.GetAllowCidrs()) &&
		slices.Equal(a.GetDenyCidrs(), b.GetDenyCidrs())
}

func viewPolicyEqual(a, b *models.NetworkPolicy) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Egress == b.Egress && slices.Equal(a.AllowCIDRs, b.AllowCIDRs) && slices.Equal(a.DenyCIDRs, b.DenyCIDRs)
}

// timeout_sec: absent is 300, 0 is never, out of range is refused.
func TestCreateTimeout(t *testing.T) {
	e := newEnv(t, Config{})
	for _, tc := range []struct {
		body   string
		status int
		want   int
	}{
		{`{}`, 201, 300},
		{`{"timeout_sec":0}`, 201, 0},
		{`{"timeout_sec":45}`, 201, 45},
		{`{"timeout_sec":-1}`, 400, 0},
		{`{"timeout_sec":86401}`, 400, 0},
	} {
		r := e.do("POST", "/v1/sandboxes", e.alice, tc.body)
		if r.status != tc.status {
			t.Errorf("%s: status %d %s, want %d", tc.body, r.status, r.body, tc.status)
			continue
		}
		if r.status == 201 {
			_, last := e.agent.created()
			if v := decode[SandboxView](t, r); v.TimeoutSec != tc.want || last.GetTimeoutSec() != int32(tc.want) {
				t.Errorf("%s: timeout_sec %d (agent %d), want %d", tc.body, v.TimeoutSec, last.GetTimeoutSec(), tc.want)
			}
		}
	}
}
