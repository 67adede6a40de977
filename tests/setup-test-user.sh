#!/usr/bin/env bash
# Prepares this machine for the integration tests' throw-away sshd (tests/it/support/sshd.rs):
# a local account `alfresco-test` with a known prompt and a random password that only root can
# read. Idempotent: run by `make test` and CI before the tests, safe to run again. Run as root.
# The password is kept across runs (only re-applied), so a run never breaks a concurrent one.
set -euo pipefail

readonly user=alfresco-test
readonly home=/home/$user
readonly secret_dir=/var/lib/alfresco-ssh-test
readonly secret_file=$secret_dir/password

if [[ $(id -u) -ne 0 ]]; then
    echo "setup-test-user.sh: must run as root (it creates a user and sets its password)" >&2
    exit 1
fi

created=kept
if ! id -u "$user" >/dev/null 2>&1; then
    useradd --system --create-home --home-dir "$home" --shell /bin/bash "$user"
    created=created
fi
# A system user created elsewhere may lack its home; sshd would refuse to chdir into nothing.
mkdir -p "$home"

# A fixed prompt, no colours, so tests can wait for exactly `alfresco-test$ `. Login shells read
# .bash_profile only; ours sources .bashrc so both login and non-login shells get the prompt.
cat >"$home/.bashrc" <<'EOF'
# Written by tests/setup-test-user.sh for the alfresco-ssh integration tests.
PS1='alfresco-test$ '
EOF
cat >"$home/.bash_profile" <<'EOF'
# Written by tests/setup-test-user.sh for the alfresco-ssh integration tests.
[ -f ~/.bashrc ] && . ~/.bashrc
EOF
# Bracketed-paste mode off: otherwise bash wraps every command's output in \e[?2004l/h, and
# byte-exact output checks would have to strip it. A test that needs it turns it on itself.
cat >"$home/.inputrc" <<'EOF'
set enable-bracketed-paste off
EOF
touch "$home/.hushlogin"
chown -R "$user:" "$home"

# Root-only secret: the directory is 0700 and the file 0600 from the moment they exist.
umask 077
mkdir -p "$secret_dir"
chown root:root "$secret_dir"
chmod 0700 "$secret_dir"
if [[ ! -s $secret_file ]]; then
    openssl rand -hex 16 >"$secret_file.tmp"
    mv "$secret_file.tmp" "$secret_file"
fi
chown root:root "$secret_file"
chmod 0600 "$secret_file"
password=$(<"$secret_file")
# printf is a builtin: the password reaches chpasswd on stdin, never on a command line.
printf '%s:%s\n' "$user" "$password" | chpasswd
unset password

# Client keys for the Dropbear and TinySSH tests (tests/it/support/dropbear.rs, tinyssh.rs).
# Neither server can be pointed at another authorized_keys file (Dropbear 2022.83 has no such
# option, TinySSH reads only ~/.ssh/authorized_keys), so unlike the OpenSSH tests' per-run keys
# these live in the account's home. They are made once and kept, like the password, so that
# running this again never changes a file a concurrent test run is reading; the private halves
# are root-only, next to the password. OpenSSH's test sshd reads its own AuthorizedKeysFile
# and never this one.
for kind in ed25519 rsa ecdsa; do
    key=$secret_dir/compat_$kind
    if [[ ! -s $key || ! -s $key.pub ]]; then
        rm -f "$key.tmp" "$key.tmp.pub"
        case $kind in
            rsa) bits=(-b 3072) ;;
            ecdsa) bits=(-b 256) ;;
            *) bits=() ;;
        esac
        ssh-keygen -q -t "$kind" "${bits[@]}" -N '' -C "alfresco-compat-$kind" -f "$key.tmp"
        mv "$key.tmp.pub" "$key.pub"
        mv "$key.tmp" "$key"
    fi
    chmod 0600 "$key" "$key.pub"
done
# Both servers refuse a ~/.ssh or authorized_keys that others can write; written to a temporary
# name and renamed, so a server never reads half a file.
install -d -m 0700 -o "$user" -g "$user" "$home/.ssh"
cat "$secret_dir"/compat_{ed25519,rsa,ecdsa}.pub >"$home/.ssh/authorized_keys.tmp"
chown "$user:" "$home/.ssh/authorized_keys.tmp"
chmod 0600 "$home/.ssh/authorized_keys.tmp"
mv "$home/.ssh/authorized_keys.tmp" "$home/.ssh/authorized_keys"

# PAM stacks for the keyboard-interactive tests (tests/it/kbd_auth.rs), which start sshd under
# these names (sshd uses its file name as the PAM service): the password through PAM alone, and
# the password then a one-time code (pam_google_authenticator, TOTP), so two prompts really
# come from sshd. The code's secret is random per machine, root-only; the tests read it.
readonly otp_secret_file=$secret_dir/otp-secret
if [[ ! -s $otp_secret_file ]]; then
    # 20 random bytes as base32 (RFC 4648 alphabet, no padding), the form the module reads.
    otp_secret=$(openssl rand 20 | base32 | tr -d '=\n')
    printf '%s\n" TOTP_AUTH\n" WINDOW_SIZE 3\n' "$otp_secret" >"$otp_secret_file.tmp"
    unset otp_secret
    mv "$otp_secret_file.tmp" "$otp_secret_file"
fi
chown root:root "$otp_secret_file"
chmod 0600 "$otp_secret_file"
cat >/etc/pam.d/alfresco-sshd-pam <<'EOF'
# Written by tests/setup-test-user.sh for the alfresco-ssh integration tests.
auth     required pam_unix.so
account  required pam_unix.so
session  required pam_permit.so
password required pam_deny.so
EOF
cat >/etc/pam.d/alfresco-sshd-otp <<EOF
# Written by tests/setup-test-user.sh for the alfresco-ssh integration tests.
auth     required pam_unix.so
auth     required pam_google_authenticator.so secret=$otp_secret_file user=root noskewadj
account  required pam_unix.so
session  required pam_permit.so
password required pam_deny.so
EOF

# sshd's privilege-separation directory; /run is a tmpfs, so it vanishes on reboot.
mkdir -p /run/sshd
chmod 0755 /run/sshd

echo "setup-test-user.sh: user $user $created, prompt and password set (password in $secret_file), compat keys in $home/.ssh/authorized_keys, /run/sshd ready"

echo "setup-test-user.sh: user $user $created, prompt and password set (password in $secret_file), PAM stacks alfresco-sshd-pam and -otp written, /run/sshd ready"
