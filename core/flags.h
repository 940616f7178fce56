// Command-line flags of the `frugal` subcommands: each command declares its flags once (name, value placeholder,
// meaning); the same table parses the arguments and writes the options part of --help, so every accepted flag is
// documented and nothing undocumented is accepted.
//
// Invariants: an unknown flag, a flag without its value, or a value flag given twice when it is not repeatable
// throws ConfigError (exit code 2) naming the flag, the nearest valid one and every valid flag; nothing starting
// with "-" is ever taken as a positional argument ("-" alone is). "--name=value" equals "--name value".
#pragma once

#include <map>
#include <string>
#include <vector>

namespace frugal {

struct Flag {
    std::string name;         // "--out"; aliases after commas: "-n,--ranks" (the first name is the main one)
    std::string placeholder;  // "DIR"; empty: a switch without a value
    std::string help;
    bool repeatable = false;  // value flags only: may be given several times (--set)
};

struct ParsedFlags {
    std::vector<std::string> positional;
    // Values by the flag's main name (the first of its names); a switch holds one "" per occurrence.
    std::map<std::string, std::vector<std::string>> values;

    bool has(const std::string& name) const { return values.count(name) > 0; }
    // The value of a value flag, or fallback when it was not given.
    std::string get(const std::string& name, const std::string& fallback = "") const;
    const std::vector<std::string>& all(const std::string& name) const;
};

// Parses args against flags; "-h"/"--help" are always accepted. command names the command in messages
// ("frugal score").
ParsedFlags parse_flags(const std::string& command, const std::vector<Flag>& flags,
                        const std::vector<std::string>& args);

// The message for an unknown flag: the flag, the nearest valid name and the list of valid names.
std::string unknown_flag_message(const std::string& command, const std::string& flag, const std::vector<Flag>& flags);
std::string missing_value_message(const std::string& command, const Flag& flag, const std::vector<Flag>& flags);

// "  --out DIR            output directory\n" for each flag, help text wrapped at 120 columns.
std::string flags_help(const std::vector<Flag>& flags);

}  // namespace frugal
