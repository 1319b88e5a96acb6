"""Encoders: how a value is written into each kind of generated file (issue 12).

The spec's allow-lists (spec.py) make sure a value is what its consumer accepts; these make
sure that, written into a file, it stays one value: one YAML scalar, one shell word, one
nftables string, one INI value, one comment line. For every value the allow-lists let through
they give exactly the bytes a plain ``"{{ value }}"`` gave before, so valid specs render
byte-identically; for anything else they quote or escape (YAML, shell) or refuse (formats
without an escape that every consumer reads the same way: nft, INI, comments).

The Jinja environment (templates.py) offers each as a filter, and its ``finalize`` refuses any
interpolated value with a line break or control character unless it is a ``Block`` (text that
is meant to span lines, such as a config embedded in a quoted here-document).
"""
from __future__ import annotations

import re

import yaml

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class UnsafeValue(ValueError):
    """A value that cannot be written into its file as one value. The spec's allow-lists stop
    such values first; reaching this is a bug in wgkube, not bad input."""


class Block(str):
    """Text that may span several lines (a whole config embedded in another file)."""


def _refuse(kind: str, value: object) -> UnsafeValue:
    return UnsafeValue(f"{value!r:.80} cannot be written as {kind}")


# --------------------------------------------------------------------------- YAML


def yaml_dq(value: object) -> str:
    """A YAML double-quoted scalar that reads back as exactly this string in YAML 1.1 and 1.2
    (PyYAML, cloud-init, kubeadm and kubectl's Go readers). Printable ASCII stays as it is;
    everything else becomes an escape, so no value can end the scalar or the line."""
    out = []
    for ch in str(value):
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        elif o <= 0xFF:
            out.append(f"\\x{o:02x}")
        elif o <= 0xFFFF:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    return '"' + "".join(out) + '"'


_PLAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._@:/-]{0,252}[A-Za-z0-9._@/-])?")
_STR_TAG = "tag:yaml.org,2002:str"
# What YAML 1.2 and Go's YAML 1.1 readers take as something other than a string, beyond
# PyYAML's own implicit resolvers (`y`, `n`, `1e3`, `0o17`, `.inf`).
_NOT_STR_ELSEWHERE = re.compile(r"[yYnN]|[-+]?(0o[0-7]+|0x[0-9a-fA-F]+|[0-9][0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)?|\.[0-9]+([eE][-+]?[0-9]+)?)"
                                r"|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")
_resolver = yaml.resolver.Resolver()


def yaml_scalar(value: object) -> str:
    """A plain scalar when the text reads back as this string everywhere (`hub`, `worker-1`),
    else double-quoted (`"yes"`, `"null"`, `"123"`, anything with other characters)."""
    text = str(value)
    if (_PLAIN.fullmatch(text) and not _NOT_STR_ELSEWHERE.fullmatch(text)
            and _resolver.resolve(yaml.ScalarNode, text, (True, False)) == _STR_TAG):
        return text
    return yaml_dq(text)


# --------------------------------------------------------------------------- shell


def sh_in_dq(value: object) -> str:
    """The inside of a bash double-quoted string: `\\`, `"`, `$` and backquote escaped, so
    the value is data, never an expansion or the end of the string."""
    text = str(value)
    if _CONTROL.search(text):
        raise _refuse("part of a shell string", text)
    return re.sub(r'([\\"$`])', r"\\\1", text)


def sh_dq(value: object) -> str:
    """One bash word: a double-quoted string (what the templates wrote by hand before)."""
    return f'"{sh_in_dq(value)}"'


_SH_BARE = re.compile(r"[A-Za-z0-9_.:/@%+=,-]+")


def sh_bare(value: object) -> str:
    """A value written unquoted (inside a case pattern or a path): only characters that are
    neither special to the shell nor glob characters."""
    text = str(value)
    if not _SH_BARE.fullmatch(text):
        raise _refuse("a bare shell word", text)
    return text


# --------------------------------------------------------------------------- nftables, INI, comments


_NFT_STRING = re.compile(r"[A-Za-z0-9_.:/@+-]{1,64}")


def nft_str(value: object) -> str:
    """An nftables quoted string. nft has no escape for `"` inside strings, so the value is
    restricted to characters that need none."""
    text = str(value)
    if not _NFT_STRING.fullmatch(text):
        raise _refuse("an nftables string", text)
    return f'"{text}"'


_INI_VALUE = re.compile(r"[A-Za-z0-9 _.:/@+=,\[\]-]*")


def ini(value: object) -> str:
    """A value in an INI-style file (wg-quick, systemd units): one line, and no `#` or `;`
    (wg-quick cuts a line at `#`), no quotes or backslashes (systemd would unquote them)."""
    text = str(value)
    if not _INI_VALUE.fullmatch(text):
        raise _refuse("an INI value", text)
    return text


_HAPROXY_WORD = re.compile(r"[A-Za-z0-9_.:-]+")


def haproxy(value: object) -> str:
    """One word of haproxy.cfg (a server name, address:port): haproxy splits its lines at spaces
    and reads quotes, backslashes and `#`, so only characters that need none pass."""
    text = str(value)
    if not _HAPROXY_WORD.fullmatch(text):
        raise _refuse("a haproxy.cfg word", text)
    return text


def comment(value: object) -> str:
    """Text inside a comment line: anything printable, never a line break."""
    text = str(value)
    if _CONTROL.search(text):
        raise _refuse("part of a comment line", text)
    return text


FILTERS = {"yq": yaml_dq, "yaml": yaml_scalar, "sh": sh_dq, "sh_in_dq": sh_in_dq, "sh_bare": sh_bare,
           "nft": nft_str, "ini": ini, "comment": comment,
           "haproxy": haproxy}


def finalize(value: object) -> object:
    """Jinja's last word on every `{{ }}`: no line break or control character gets into a
    generated file through an interpolation unless the template says it is a Block."""
    if isinstance(value, str) and not isinstance(value, Block) and _CONTROL.search(value):
        raise _refuse("one line of a generated file", value)
    return value
