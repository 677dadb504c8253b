package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
	"github.com/phx-exchange/phx/sdk"
)

// Connect with the hub address and credentials of PHX_HUB, PHX_CA,
// PHX_CERT and PHX_KEY.
func ExampleNew() {
	c, err := sdk.New("", sdk.FromEnv())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	who, err := c.WhoAmI(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(who.GetOrg(), who.GetRole())
	// Output: contoso ROLE_VENDOR
}

func ExampleClient_WhoAmI() {
	c, err := sdk.New("", sdk.FromEnv())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	who, err := c.WhoAmI(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("org:", who.GetOrg())
	fmt.Println("role:", who.GetRole())
	fmt.Println("products:", who.GetProducts())
	fmt.Println("auth:", who.GetAuthMethod())
	// Output:
	// org: contoso
	// role: ROLE_VENDOR
	// products: [contoso-av]
	// auth: AUTH_METHOD_MTLS
}

// Publish health cells, inspect per-item results, and publish them again:
// signal_id makes publishing idempotent.
func ExampleClient_PublishSignals() {
	ctx := context.Background()
	c, err := sdk.New("", sdk.FromEnv())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	run := unique()
	good1, good2 := cell("ex-"+run+"-1"), cell("ex-"+run+"-2")
	bad := cell("ex-" + run + "-3")
	bad.DevicesExposed = bad.DevicesActive + 1 // exposed devices must be active

	signals := []*phxv1.HealthSignal{good1, good2, bad}
	resp, err := c.PublishSignals(ctx, signals)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("accepted=%d duplicates=%d rejected=%d\n", resp.GetAccepted(), resp.GetDuplicates(), resp.GetRejected())
	for _, r := range resp.GetResults() {
		if err := sdk.ItemErr(r.GetError()); err != nil {
			fmt.Printf("signals[%d]: %v (invalid argument: %t)\n", r.GetIndex(), err, errors.Is(err, sdk.ErrInvalidArgument))
		}
	}

	resp, err = c.PublishSignals(ctx, signals[:2])
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("accepted=%d duplicates=%d rejected=%d\n", resp.GetAccepted(), resp.GetDuplicates(), resp.GetRejected())
	// Output:
	// accepted=2 duplicates=0 rejected=1
	// signals[2]: invalid argument: devices_exposed: 1201 must be ≤ devices_active (1200) (invalid argument: true)
	// accepted=0 duplicates=2 rejected=0
}

// Subscribe to new health cells of a product, then receive one published
// after subscribing.
func ExampleClient_Subscribe() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := sdk.New("", sdk.FromEnv())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	sub, err := c.Subscribe(ctx, &phxv1.SubscribeRequest{
		Kinds:    []phxv1.Kind{phxv1.Kind_KIND_HEALTH_SIGNAL},
		Products: []string{"contoso-av"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()

	id := "sub-" + unique()
	if _, err := c.PublishSignals(ctx, []*phxv1.HealthSignal{cell(id)}); err != nil {
		log.Fatal(err)
	}
	for {
		env, err := sub.Recv()
		if err != nil {
			log.Fatal(err)
		}
		s := env.GetHealthSignal()
		if s.GetSignalId() != id {
			continue // published by someone else meanwhile
		}
		fmt.Println(env.GetKind(), env.GetPublisher(), env.GetProduct(), env.GetAudience().GetTlp())
		fmt.Println("content", s.GetContentVersion(), "exposed", s.GetDevicesExposed(), "boot failures", s.GetBootFailureDevices())
		fmt.Println("has cursor:", env.GetCursor() != "" && sub.Cursor() == env.GetCursor())
		break
	}
	// Output:
	// KIND_HEALTH_SIGNAL contoso contoso-av TLP_GREEN
	// content 291.1 exposed 1000 boot failures 1
	// has cursor: true
}

// Announce a rollout, then pause it with compare-and-set on its revision.
func ExampleClient_UpdateRollout() {
	ctx := context.Background()
	c, err := sdk.New("", sdk.FromEnv())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	r, err := c.AnnounceRollout(ctx, &phxv1.Rollout{
		RolloutId:       "channel-291-" + unique(),
		Product:         "contoso-av",
		ContentChannel:  "channel-291",
		ContentVersion:  "291.1",
		PreviousVersion: "291.0",
		CurrentRing:     phxv1.Ring_RING_CANARY,
		PercentDeployed: 1,
		Audience:        &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.GetRevision(), r.GetState(), r.GetPublisher())

	r, err = c.UpdateRollout(ctx, r.GetRolloutId(), r.GetRevision(),
		&phxv1.Rollout{State: phxv1.RolloutState_ROLLOUT_PAUSED, Reason: "boot failures in canary"},
		"state", "reason")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.GetRevision(), r.GetState(), r.GetReason())

	// An update against a revision that is no longer current is refused.
	_, err = c.UpdateRollout(ctx, r.GetRolloutId(), 1,
		&phxv1.Rollout{State: phxv1.RolloutState_ROLLOUT_ACTIVE}, "state")
	fmt.Println(errors.Is(err, sdk.ErrFailedPrecondition))
	// Output:
	// 1 ROLLOUT_ACTIVE contoso
	// 2 ROLLOUT_PAUSED boot failures in canary
	// true
}

// Report an incident; the hub assigns its id and revision 1.
func ExampleClient_ReportIncident() {
	ctx := context.Background()
	c, err := sdk.New("", sdk.FromEnv())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	inc, err := c.ReportIncident(ctx, &phxv1.Incident{
		Title:          "Boot loops after channel 291 update",
		Classification: phxv1.Classification_CLASSIFICATION_INCIDENT,
		Severity:       phxv1.Severity_SEVERITY_CRITICAL,
		Status:         phxv1.Status_STATUS_INVESTIGATING,
		Affected:       []*phxv1.Affected{{Product: "contoso-av", ContentChannel: "channel-291", ContentVersion: "291.1"}},
		Audience:       &phxv1.Audience{Tlp: phxv1.Tlp_TLP_AMBER},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(inc.GetId()) > 0, inc.GetRevision(), inc.GetStatus(), inc.GetReporter())

	inc, err = c.UpdateIncident(ctx, inc.GetId(), inc.GetRevision(),
		&phxv1.Incident{Status: phxv1.Status_STATUS_MITIGATING}, "status")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(inc.GetRevision(), inc.GetStatus())
	// Output:
	// true 1 STATUS_INVESTIGATING contoso
	// 2 STATUS_MITIGATING
}

// Errors are *sdk.Error values: match them with errors.Is and read the
// offending field.
func ExampleError() {
	ctx := context.Background()
	c, err := sdk.New("", sdk.FromEnv())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	_, err = c.GetRollout(ctx, "no-such-rollout")
	fmt.Println(errors.Is(err, sdk.ErrNotFound))

	_, err = c.AnnounceRollout(ctx, &phxv1.Rollout{
		RolloutId:      "edr-" + unique(),
		Product:        "fabrikam-edr", // owned by fabrikam
		ContentVersion: "1.2.3",
		CurrentRing:    phxv1.Ring_RING_CANARY,
		Audience:       &phxv1.Audience{Tlp: phxv1.Tlp_TLP_GREEN},
	})
	var e *sdk.Error
	if errors.As(err, &e) {
		fmt.Println(e.Code, "|", e.Field)
	}
	fmt.Println(errors.Is(err, sdk.ErrPermissionDenied))
	// Output:
	// true
	// permission denied | rollout.product
	// true
}

// A CERT reads with a bearer token over server-authenticated TLS, without
// a client certificate. The hub's operator issues the token (here with the
// operator's certificate; `phx token issue` on the command line).
func ExampleWithToken() {
	ctx := context.Background()
	op, err := sdk.New(hub.Addr, sdk.WithCertFiles(hub.PKI.CACert(), hub.PKI.OrgCert("operator"), hub.PKI.OrgKey("operator")))
	if err != nil {
		log.Fatal(err)
	}
	defer op.Close()
	tok, err := op.IssueToken(ctx, &phxv1.IssueTokenRequest{Org: "national-cert", Role: phxv1.Role_ROLE_CERT, Ttl: durationpb.New(time.Hour)})
	if err != nil {
		log.Fatal(err)
	}

	cert, err := sdk.New(hub.Addr, sdk.WithCAFile(hub.PKI.CACert()), sdk.WithToken(tok.GetToken()))
	if err != nil {
		log.Fatal(err)
	}
	defer cert.Close()
	who, err := cert.WhoAmI(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(who.GetOrg(), who.GetRole(), who.GetAuthMethod(), who.GetTokenScopes())

	// A read-only token cannot publish.
	_, err = cert.PublishSignals(ctx, []*phxv1.HealthSignal{cell("ex-" + unique() + "-token")})
	fmt.Println(errors.Is(err, sdk.ErrPermissionDenied))

	// Once revoked, the token is refused.
	if _, err := op.RevokeToken(ctx, tok.GetJti()); err != nil {
		log.Fatal(err)
	}
	_, err = cert.WhoAmI(ctx)
	fmt.Println(errors.Is(err, sdk.ErrUnauthenticated))
	// Output:
	// national-cert ROLE_CERT AUTH_METHOD_TOKEN [read]
	// true
	// true
}
