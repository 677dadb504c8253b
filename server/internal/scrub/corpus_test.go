package scrub

import (
	"slices"
	"testing"
)

// positive is a text with identifiers: Scrub must turn in into want and
// report kinds, in order.
type positive struct {
	in    string
	want  string
	kinds []Kind
}

// Shorthands for the kinds lists of the corpus.
var (
	kEmail = []Kind{Email}
	kIPv4  = []Kind{IPv4}
	kIPv6  = []Kind{IPv6}
	kMAC   = []Kind{MAC}
	kUser  = []Kind{UserPath}
	kSID   = []Kind{SID}
	kGUID  = []Kind{GUID}
	kHost  = []Kind{Hostname}
	kCred  = []Kind{URLCredentials}
)

var positives = []positive{
	// e-mail addresses
	{"contact jdoe@contoso.com for details", "contact [redacted:email] for details", kEmail},
	{"Reported by Jane.Doe+crash@fabrikam.co.uk.", "Reported by [redacted:email].", kEmail},
	{"<soc-team@northwind-traders.net>", "<[redacted:email]>", kEmail},
	{"mailto:it.support@contoso.com", "mailto:[redacted:email]", kEmail},
	{"(cc: a.b@x-y.org, c_d@sub.example.io)", "(cc: [redacted:email], [redacted:email])", []Kind{Email, Email}},
	{"owner: JDOE@CONTOSO.COM", "owner: [redacted:email]", kEmail},
	{"user jdoe@mail.corp.contoso.com reported it", "user [redacted:email] reported it", kEmail},
	{"\"first.last@example.org\"", "\"[redacted:email]\"", kEmail},
	{"escalated to oncall%team@contoso.com today", "escalated to [redacted:email] today", kEmail},
	{"e-mail:admin@fabrikam.com", "e-mail:[redacted:email]", kEmail},

	// IPv4
	{"the sensor at 10.1.2.3 stopped reporting", "the sensor at [redacted:ipv4] stopped reporting", kIPv4},
	{"proxy 192.168.0.254:8080 refused", "proxy [redacted:ipv4]:8080 refused", kIPv4},
	{"blocked 172.16.5.4/24 and 8.8.8.8.", "blocked [redacted:ipv4]/24 and [redacted:ipv4].", []Kind{IPv4, IPv4}},
	{"range 10.0.0.1-10.0.0.9", "range [redacted:ipv4]-[redacted:ipv4]", []Kind{IPv4, IPv4}},
	{"[203.0.113.7]", "[[redacted:ipv4]]", kIPv4},
	{"src=198.51.100.23 dst=10.0.0.5", "src=[redacted:ipv4] dst=[redacted:ipv4]", []Kind{IPv4, IPv4}},
	{"IP:127.0.0.1", "IP:[redacted:ipv4]", kIPv4},
	{"ping 255.255.255.255", "ping [redacted:ipv4]", kIPv4},
	{"(0.0.0.0)", "([redacted:ipv4])", kIPv4},
	{"host 10.20.30.40 rebooted", "host [redacted:ipv4] rebooted", kIPv4},
	{"10.0.0.1", "[redacted:ipv4]", kIPv4},

	// IPv6
	{"peer 2001:db8::1 dropped", "peer [redacted:ipv6] dropped", kIPv6},
	{"link-local fe80::1ff:fe23:4567:890a%eth0 seen", "link-local [redacted:ipv6] seen", kIPv6},
	{"[2001:db8:85a3::8a2e:370:7334]:443", "[[redacted:ipv6]]:443", kIPv6},
	{"mapped ::ffff:192.0.2.128 address", "mapped [redacted:ipv6] address", kIPv6},
	{"full 2001:0db8:0000:0000:0000:ff00:0042:8329.", "full [redacted:ipv6].", kIPv6},
	{"loopback ::1 only", "loopback [redacted:ipv6] only", kIPv6},
	{"IP:fd12:3456:789a:1::1", "IP:[redacted:ipv6]", kIPv6},
	{"prefix 2001:db8:abcd:12::/64", "prefix [redacted:ipv6]/64", kIPv6},
	{"the address 2001:db8::42: unreachable", "the address [redacted:ipv6]: unreachable", kIPv6},
	{"Teredo 2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo [redacted:ipv6]", kIPv6},

	// MAC addresses
	{"NIC 00:1A:2B:3C:4D:5E flapped", "NIC [redacted:mac] flapped", kMAC},
	{"getmac: 00-1a-2b-3c-4d-5e", "getmac: [redacted:mac]", kMAC},
	{"cisco 001a.2b3c.4d5e port 3", "cisco [redacted:mac] port 3", kMAC},
	{"(a4:83:e7:0b:1c:9f)", "([redacted:mac])", kMAC},
	{"MAC=F0-DE-F1-12-34-56;", "MAC=[redacted:mac];", kMAC},
	{"bssid 12:34:56:78:90:12.", "bssid [redacted:mac].", kMAC},

	// SIDs
	{"owner S-1-5-21-1004336348-1177238915-682003330-1001 denied", "owner [redacted:sid] denied", kSID},
	{"SID: S-1-5-21-3623811015-3361044348-30300820-500", "SID: [redacted:sid]", kSID},
	{"azure S-1-12-1-1234567890-1234567890-1234567890-1234567890", "azure [redacted:sid]", kSID},
	{"service S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464 started", "service [redacted:sid] started", kSID},
	{"(s-1-5-21-1-2-3)", "([redacted:sid])", kSID},
	{"machine SID S-1-5-21-2127521184-1604012920-1887927527", "machine SID [redacted:sid]", kSID},

	// GUIDs
	{"device id 3F2504E0-4F89-11D3-9A0C-0305E82C3301 crashed", "device id [redacted:guid] crashed", kGUID},
	{"tenant {6b29fc40-ca47-1067-b31d-00dd010662da}", "tenant [redacted:guid]", kGUID},
	{"AgentId=7c9e6679-7425-40de-944b-e07fc1f90ae7.", "AgentId=[redacted:guid].", kGUID},
	{"log-0b2a8f1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b.etl", "log-[redacted:guid].etl", kGUID},
	{"\"aid\":\"d2c4e6f8-1a3b-4c5d-9e7f-123456789abc\"", "\"aid\":\"[redacted:guid]\"", kGUID},
	{"{00000000-0000-0000-0000-000000000000}", "[redacted:guid]", kGUID},

	// user profile paths
	{`C:\Users\jdoe\AppData\Local\Temp\x.dll`, `C:\Users\[redacted:user_path]\AppData\Local\Temp\x.dll`, kUser},
	{`c:\users\JSmith\Desktop`, `c:\users\[redacted:user_path]\Desktop`, kUser},
	{`C:/Users/jdoe/Downloads/setup.exe`, `C:/Users/[redacted:user_path]/Downloads/setup.exe`, kUser},
	{`C:\Users\John Smith\AppData\Roaming`, `C:\Users\[redacted:user_path]\AppData\Roaming`, kUser},
	{`found in C:\Users\jdoe and D:\data`, `found in C:\Users\[redacted:user_path] and D:\data`, kUser},
	{`%SystemDrive%\Users\adm-jdoe\NTUSER.DAT`, `%SystemDrive%\Users\[redacted:user_path]\NTUSER.DAT`, kUser},
	{`"C:\\Users\\jdoe\\AppData"`, `"C:\\Users\\[redacted:user_path]\\AppData"`, kUser},
	{`/home/jdoe/.config/agent.conf`, `/home/[redacted:user_path]/.config/agent.conf`, kUser},
	{`cd /home/build-user.`, `cd /home/[redacted:user_path].`, kUser},
	{`/Users/jane.doe/Library/Logs/agent.log`, `/Users/[redacted:user_path]/Library/Logs/agent.log`, kUser},
	{`C:\Documents and Settings\jdoe\Local Settings`, `C:\Documents and Settings\[redacted:user_path]\Local Settings`, kUser},
	{`profile C:\Users\jdoe.CONTOSO\AppData`, `profile C:\Users\[redacted:user_path]\AppData`, kUser},
	{`C:\Users\José\Desktop`, `C:\Users\[redacted:user_path]\Desktop`, kUser},
	{`(C:\Users\jdoe)`, `(C:\Users\[redacted:user_path])`, kUser},
	{`file:///C:/Users/jdoe/report.txt`, `file:///C:/Users/[redacted:user_path]/report.txt`, kUser},
	{`/var/home/jdoe/x`, `/var/home/[redacted:user_path]/x`, kUser},

	// host names: Windows default names
	{"crashed on DESKTOP-7F3K2LQ after reboot", "crashed on [redacted:hostname] after reboot", kHost},
	{"LAPTOP-AB12CD3 and WIN-5QK2M8H4P1R", "[redacted:hostname] and [redacted:hostname]", []Kind{Hostname, Hostname}},
	{"desktop-7f3k2lq.contoso.com", "[redacted:hostname]", kHost},
	{"signed in as DESKTOP-7F3K2LQ\\jdoe", "signed in as [redacted:hostname]", kHost},
	{"DESKTOP-ABCDEFG", "[redacted:hostname]", kHost},
	{"MEMORY.DMP from WIN-ABCDEF12345.", "MEMORY.DMP from [redacted:hostname].", kHost},
	// internal suffixes and AD names
	{"dc01.corp.contoso.com replied", "[redacted:hostname] replied", kHost},
	{"printer.local is down", "[redacted:hostname] is down", kHost},
	{"nas.lan, router.home.arpa", "[redacted:hostname], [redacted:hostname]", []Kind{Hostname, Hostname}},
	{"ip-10-0-0-1.ec2.internal", "[redacted:hostname]", kHost},
	{"fs1.ad.fabrikam.net", "[redacted:hostname]", kHost},
	{"DC02.CORP.CONTOSO.COM", "[redacted:hostname]", kHost},
	{"build.localdomain", "[redacted:hostname]", kHost},
	{"wiki.intranet was slow", "[redacted:hostname] was slow", kHost},
	{"see http://jira.corp.contoso.com/browse/X-1", "see http://[redacted:hostname]/browse/X-1", kHost},
	{"_ldap._tcp.dc._msdcs.corp.local", "[redacted:hostname]", kHost},
	{"srv.corp", "[redacted:hostname]", kHost},
	{"ip-172-31-5-10", "[redacted:hostname]", kHost},
	// UNC
	{`copy \\FILESRV01\share\fix.ps1`, `copy \\[redacted:hostname]\share\fix.ps1`, kHost},
	{`\\fs-02.contoso.com\deploy$`, `\\[redacted:hostname]\deploy$`, kHost},
	{`"\\\\buildbox\\drops"`, `"\\\\[redacted:hostname]\\drops"`, kHost},
	{`from \\10.0.0.7\c$`, `from \\[redacted:ipv4]\c$`, kIPv4},
	{`\\NAS`, `\\[redacted:hostname]`, kHost},
	// cues
	{"on host FINANCE-PC07 the agent hung", "on host [redacted:hostname] the agent hung", kHost},
	{"hostname: finance", "hostname: [redacted:hostname]", kHost},
	{"Host Name . . . . . . : FIN-WS-042", "Host Name . . . . . . : [redacted:hostname]", kHost},
	{"computer name=RECEPTION2", "computer name=[redacted:hostname]", kHost},
	{"the machine named KIOSK01 bugchecked", "the machine named [redacted:hostname] bugchecked", kHost},
	{"device name \"Front Desk\"", "device name \"[redacted:hostname]\"", kHost},
	{"ComputerName: ACCTG", "ComputerName: [redacted:hostname]", kHost},
	{"the hostname is web01.", "the hostname is [redacted:hostname].", kHost},
	{"workstation HR_LAPTOP_3 froze", "workstation [redacted:hostname] froze", kHost},
	{"server EXCH01 and host 'payroll'", "server [redacted:hostname] and host '[redacted:hostname]'", []Kind{Hostname, Hostname}},
	{"machine: FINANCE-PC07$", "machine: [redacted:hostname]", kHost},
	{"HOSTNAME=buildagent7", "HOSTNAME=[redacted:hostname]", kHost},
	{"endpoint SALES-14 is isolated", "endpoint [redacted:hostname] is isolated", kHost},
	{"device_name: POS3", "device_name: [redacted:hostname]", kHost},
	{"computer PAYROLL stopped", "computer [redacted:hostname] stopped", kHost},
	{"host web.contoso.com", "host [redacted:hostname]", kHost},

	// URLs with credentials
	{"fetch https://admin:S3cret!@10.0.0.5/api now", "fetch [redacted:url_credentials] now", kCred},
	{"git clone https://ghp_abc123@github.com/org/repo.git", "git clone [redacted:url_credentials]", kCred},
	{"ftp://user:pass@ftp.contoso.com:21/pub.", "[redacted:url_credentials].", kCred},
	{"(see http://u:p@host.corp.local/x)", "(see [redacted:url_credentials])", kCred},
	{"db=postgres://svc:hunter2@[2001:db8::5]:5432/phx", "db=[redacted:url_credentials]", kCred},
	{"ssh admin:hunter2@10.0.0.5", "ssh [redacted:url_credentials]", kCred},
	{"amqp://guest:guest@rabbit:5672", "[redacted:url_credentials]", kCred},
	{"scp root:toor@[fe80::1%eth0]:22", "scp [redacted:url_credentials]", kCred},
	{"smb://jdoe@nas.local/share", "[redacted:url_credentials]", kCred},

	// realistic incident prose with several kinds
	{
		"Boot loop on DESKTOP-7F3K2LQ (10.1.4.22) after channel 291 update; user jane.doe@contoso.com lost C:\\Users\\jdoe\\Documents.",
		"Boot loop on [redacted:hostname] ([redacted:ipv4]) after channel 291 update; user [redacted:email] lost C:\\Users\\[redacted:user_path]\\Documents.",
		[]Kind{Hostname, IPv4, Email, UserPath},
	},
	{
		"Bugcheck 0x50 PAGE_FAULT_IN_NONPAGED_AREA in csagent.sys on 10.0.22631.3880, host FIN-PC-07, MAC 00:1A:2B:3C:4D:5E.",
		"Bugcheck 0x50 PAGE_FAULT_IN_NONPAGED_AREA in csagent.sys on 10.0.22631.3880, host [redacted:hostname], MAC [redacted:mac].",
		[]Kind{Hostname, MAC},
	},
	{
		"Remediation: boot into WinRE, delete C-00000291*.sys from \\\\FILESRV01\\fix or https://learn.microsoft.com/en-us/troubleshoot and contact it@fabrikam.com.",
		"Remediation: boot into WinRE, delete C-00000291*.sys from \\\\[redacted:hostname]\\fix or https://learn.microsoft.com/en-us/troubleshoot and contact [redacted:email].",
		[]Kind{Hostname, Email},
	},
	{
		"Event 41 on ws-0042.corp.contoso.com for S-1-5-21-1004336348-1177238915-682003330-1001, agent id {3F2504E0-4F89-11D3-9A0C-0305E82C3301}.",
		"Event 41 on [redacted:hostname] for [redacted:sid], agent id [redacted:guid].",
		[]Kind{Hostname, SID, GUID},
	},
	{
		"Crash dump uploaded from /home/svc-build/dumps on 2001:db8:0:1::17 via https://deploy:tok3n@artifacts.contoso.com/upload.",
		"Crash dump uploaded from /home/[redacted:user_path]/dumps on [redacted:ipv6] via [redacted:url_credentials].",
		[]Kind{UserPath, IPv6, URLCredentials},
	},
	{
		"Affected: 8,500 devices; first seen 04:09 UTC on LAPTOP-Q1W2E3R (fe80::c0ff:ee:1%12) running KB5040442.",
		"Affected: 8,500 devices; first seen 04:09 UTC on [redacted:hostname] ([redacted:ipv6]) running KB5040442.",
		[]Kind{Hostname, IPv6},
	},
	{
		"Statement: the fault was isolated to machine KIOSK-3 at 192.0.2.44; no customer data at 2001:db8::9 was exposed.",
		"Statement: the fault was isolated to machine [redacted:hostname] at [redacted:ipv4]; no customer data at [redacted:ipv6] was exposed.",
		[]Kind{Hostname, IPv4, IPv6},
	},
	{
		"Reporter: SOC <soc@northwind.example>, computer name RECEPTION-2, profile C:\\Users\\rec.front\\.",
		"Reporter: SOC <[redacted:email]>, computer name [redacted:hostname], profile C:\\Users\\[redacted:user_path]\\.",
		[]Kind{Email, Hostname, UserPath},
	},
	{
		"Post: rollback pushed to ring 1; still failing on 10.4.8.15 and 10.4.8.16 (getmac 3c-52-82-aa-bb-cc).",
		"Post: rollback pushed to ring 1; still failing on [redacted:ipv4] and [redacted:ipv4] (getmac [redacted:mac]).",
		[]Kind{IPv4, IPv4, MAC},
	},
	{
		"Collected C:\\Windows\\MEMORY.DMP from \\\\DESKTOP-7F3K2LQ\\C$\\Users\\jdoe\\Desktop.",
		"Collected C:\\Windows\\MEMORY.DMP from \\\\[redacted:hostname]\\C$\\Users\\[redacted:user_path]\\Desktop.",
		[]Kind{Hostname, UserPath},
	},
}

// lookalikes must come out of Scrub untouched.
var lookalikes = []string{
	// OS builds and versions
	"Windows 11 build 10.0.22631.3880 is affected",
	"10.0.19045.4651 and 10.0.17763.6054",
	"6.1.7601.24545",
	"agent 7.16.18 with content 291.1",
	"sensor version 7.11.2.4 is fine",
	"build 22621.1.amd64fre.ni_release.220506-1250",
	"firmware 1.2.3.4 and release 2.0.1.7",
	"Defender platform 4.18.24050.7",
	"Chrome 126.0.6478.127",
	"v1.2.3.4 and v10.0.0.1",
	"1.2.3.4.5",
	// bugchecks and modules
	"bugcheck 0x50 in csagent.sys",
	"STOP 0x0000007E (0xFFFFFFFFC0000005)",
	"PAGE_FAULT_IN_NONPAGED_AREA at ntoskrnl.exe+0x3f2c10",
	"SYSTEM_THREAD_EXCEPTION_NOT_HANDLED",
	"C-00000291-00000000-00000032.sys",
	"delete C-00000291*.sys from %WINDIR%\\System32\\drivers\\CrowdStrike",
	"C:\\Windows\\System32\\drivers\\csagent.sys",
	"fltmgr.sys, WdFilter.sys and hal.dll",
	"Microsoft.Windows.Internal.Shell.dll",
	// ids
	"CVE-2024-3400 and CVE-2021-44228",
	"KB5040442, KB5039212",
	"INC-0A1B2C3D4E and rollout cs-291",
	"sha256 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
	"md5 d41d8cd98f00b204e9800998ecf8427e",
	"well-known S-1-5-18 and S-1-5-32-544",
	"S-1-5-21-… is a domain SID prefix",
	// times, dates, numbers
	"first seen 12:34:56 UTC",
	"2024-07-19T04:09:00Z",
	"19.07.2024 and 2024.07.19",
	"ratio 1:1000, 3:2:1",
	"8.5 million machines in 78 minutes",
	"failures rose to 12.5% (p < 0.001)",
	"window 04:09-05:27",
	// code and paths
	"std::io::Error and std::vector<int>",
	"crate::scrub::Scrub",
	"Foo::Bar() and a::b",
	"call ::GetProcAddress",
	"note:: see below",
	"%USERPROFILE%\\AppData\\Local\\Temp",
	"C:\\Users\\%USERNAME%\\AppData",
	"C:\\Users\\*\\AppData\\Local\\Temp",
	"C:\\Users\\Public\\Desktop",
	"C:\\Users\\Default\\NTUSER.DAT",
	"/home/<user>/.config",
	"/Users/Shared/agent",
	"$HOME/.cache",
	"HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet",
	"Computer\\HKEY_LOCAL_MACHINE\\SOFTWARE",
	"\\\\?\\C:\\Windows and \\\\.\\PhysicalDrive0",
	"\\\\wsl$\\Ubuntu",
	// prose with cue words and the word Users
	"Users reported slow logons",
	"the Users group and Local Users/Groups",
	"the host OS crashed on the host machine",
	"machine learning-based detection",
	"the machine rebooted; the host's agent hung",
	"Windows Server 2022 and server-side fixes",
	"the host process svchost.exe",
	"a host of problems",
	"each device name must be unique",
	"host x64 builds and machine arm64",
	"Machine Check Exception",
	"computer 3 of 10",
	"HTTP/1.1 503, Server: nginx/1.25.3",
	// public URLs and domains
	"https://learn.microsoft.com/en-us/troubleshoot/windows-client/",
	"see https://github.com/users/guide and https://example.com/home/page",
	"https://www.crowdstrike.com/blog/falcon-update-for-windows-hosts-technical-details/",
	"support.microsoft.com and status.contoso.com",
	"http://localhost:8080/health",
	"icon@2x.png",
	"npm install left-pad@1.3.0",
	"@contoso-team please review",
	"time 10:30 @ office",
	// MAC-like and GUID-like
	"fingerprint AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89",
	"1234.5678.9012",
	"00:1A:2B",
	"3F2504E0-4F89-11D3-9A0C",
	"3F2504E04F8911D39A0C0305E82C3301",
}

func kindsOf(fs []Finding) []Kind {
	var ks []Kind
	for _, f := range fs {
		ks = append(ks, f.Kind)
	}
	return ks
}

func TestCorpusPositives(t *testing.T) {
	if len(positives) < 100 {
		t.Fatalf("the corpus has %d positive cases; it needs at least 100", len(positives))
	}
	t.Logf("%d positive cases", len(positives))
	seen := map[Kind]bool{}
	for _, c := range positives {
		got, fs := Scrub(c.in)
		if got != c.want {
			t.Errorf("Scrub(%q)\n got %q\nwant %q", c.in, got, c.want)
		}
		if ks := kindsOf(fs); !slices.Equal(ks, c.kinds) {
			t.Errorf("Scrub(%q) kinds %v, want %v", c.in, ks, c.kinds)
		}
		for _, k := range c.kinds {
			seen[k] = true
		}
	}
	for _, k := range Kinds {
		if !seen[k] {
			t.Errorf("no positive case of kind %s", k)
		}
	}
}

func TestCorpusLookalikes(t *testing.T) {
	if len(lookalikes) < 50 {
		t.Fatalf("the corpus has %d look-alikes; it needs at least 50", len(lookalikes))
	}
	t.Logf("%d look-alikes", len(lookalikes))
	for _, in := range lookalikes {
		if got, fs := Scrub(in); got != in || fs != nil {
			t.Errorf("Scrub(%q) = %q, %v; want it untouched", in, got, fs)
		}
	}
}
