//! A [`Platform`] for unit tests: variables from a table, Redis replies
//! queued in advance, and every command recorded.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

use crate::platform::{Platform, Reply};

pub struct FakePlatform {
    variables: HashMap<String, String>,
    replies: RefCell<VecDeque<Vec<Reply>>>,
    commands: RefCell<Vec<String>>,
}

impl FakePlatform {
    pub fn with_variables(variables: &[(&str, &str)]) -> FakePlatform {
        FakePlatform {
            variables: variables
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            replies: RefCell::default(),
            commands: RefCell::default(),
        }
    }

    pub fn set_variable(&mut self, name: &str, value: &str) {
        self.variables.insert(name.to_owned(), value.to_owned());
    }

    /// Queue the reply to the next Redis command.
    pub fn reply(&self, reply: Vec<Reply>) {
        self.replies.borrow_mut().push_back(reply);
    }

    /// Every command so far, its arguments joined by spaces.
    pub fn commands(&self) -> Vec<String> {
        self.commands.borrow().clone()
    }
}

impl Platform for FakePlatform {
    fn variable(&self, name: &str) -> Result<Option<String>, String> {
        Ok(self.variables.get(name).cloned())
    }

    fn redis(&self, _address: &str, command: &str, args: &[&[u8]]) -> Result<Vec<Reply>, String> {
        let mut line = command.to_owned();
        for arg in args {
            line.push(' ');
            line.push_str(&String::from_utf8_lossy(arg));
        }
        self.commands.borrow_mut().push(line);
        self.replies
            .borrow_mut()
            .pop_front()
            .ok_or_else(|| "connection refused".to_owned())
    }
}
