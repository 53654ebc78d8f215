package models

import (
	"fmt"
	"testing"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

func TestNetworkPolicyValidate(t *testing.T) {
	many := make([]string, MaxPolicyCIDRs+1)
	for i := range many {
		many[i] = fmt.Sprintf("203.0.113.%d/32", i)
	}
	tests := []struct {
		name string
		p    NetworkPolicy
		ok   bool
	}{
		{"zero", NetworkPolicy{}, true},
		{"allow all with denies", NetworkPolicy{Egress: EgressAllowAll, DenyCIDRs: []string{"198.51.100.0/24"}}, true},
		{"deny all with allows", NetworkPolicy{Egress: EgressDenyAll, AllowCIDRs: []string{"198.51.100.7/32", "0.0.0.0/0"}}, true},
		{"unknown egress", NetworkPolicy{Egress: "some"}, false},
		{"not a cidr", NetworkPolicy{DenyCIDRs: []string{"example.com"}}, false},
		{"bare address", NetworkPolicy{AllowCIDRs: []string{"198.51.100.7"}}, false},
		{"ipv6", NetworkPolicy{AllowCIDRs: []string{"2001:db8::/32"}}, false},
		{"too many", NetworkPolicy{DenyCIDRs: many}, false},
		{"at the limit", NetworkPolicy{DenyCIDRs: many[:MaxPolicyCIDRs]}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errdefs.IsInvalidArgument(err) {
				t.Errorf("error %v is not invalid_argument", err)
			}
		})
	}
	if !(NetworkPolicy{Egress: EgressDenyAll}).DenyAll() || (NetworkPolicy{}).DenyAll() {
		t.Error("DenyAll")
	}
}
