"""mediad: the e2ae edge media daemon (eIMS-AGW / IMS-AGW of 3GPP TS 23.334)."""
